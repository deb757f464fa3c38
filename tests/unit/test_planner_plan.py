"""The planner's cutting and the plan's round trip, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

from dj_runner.io.sources import list_sources
from dj_runner.plan.partitioner import Plan, build_plan
from dj_runner.recipe.parse import PartitionConfig
from dj_runner.store.workdir import WorkDir


def write_lines(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"text": f"sample number {i}"}) + "\n" for i in range(n)))
    return path


def test_size_mode_cuts_every_row_once_in_order(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", 25)
    write_lines(tmp_path / "b.jsonl", 7)
    plan = build_plan(list_sources(str(tmp_path)), PartitionConfig("size", 10, 256.0, None), 2)
    assert [p.rows for p in plan.partitions] == [10, 10, 10, 2]
    assert plan.total_rows == 32 and [p.pid for p in plan.partitions] == [0, 1, 2, 3]
    # partition 2 spans the end of a.jsonl and the start of b.jsonl
    assert [(r.file, r.rows) for r in plan.partitions[2].ranges] == [(0, 5), (1, 5)]
    assert len({p.content_hash for p in plan.partitions}) == 4


def test_megabyte_bound_cuts_smaller_partitions(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"text": "x" * 1000}) + "\n" for _ in range(50)))
    plan = build_plan(list_sources(str(path)), PartitionConfig("size", 1000, 0.01, None), 1)
    assert all(p.bytes <= 0.01 * 1024 * 1024 for p in plan.partitions)
    assert sum(p.rows for p in plan.partitions) == 50 and len(plan.partitions) > 1


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", 12)
    plan = build_plan(list_sources(str(tmp_path)), PartitionConfig("size", 5, 256.0, None), 1)
    plan.save(WorkDir(tmp_path).plan_path)
    back = Plan.from_dict(json.loads(WorkDir(tmp_path).plan_path.read_text()))
    assert back == plan
