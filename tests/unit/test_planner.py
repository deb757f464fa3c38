"""The planner: bounds, ranges that cover the input exactly, hashes, and the saved plan."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dj_runner.io.sources import list_sources, read_line_range, read_rows
from dj_runner.plan.partitioner import Plan, build_plan, columnar_hash
from dj_runner.recipe.parse import PartitionConfig


def lines(n: int, start: int = 0) -> str:
    return "".join(json.dumps({"text": f"record {i}"}) + "\n" for i in range(start, start + n))


def size_mode(rows: int, mb: float = 128.0) -> PartitionConfig:
    return PartitionConfig("size", rows, mb, None)


def test_size_mode_cuts_at_the_row_bound_across_files(tmp_path):
    (tmp_path / "a.jsonl").write_text(lines(7))
    (tmp_path / "b.jsonl").write_text("\n" + lines(5, 7) + "\n")  # blank lines do not count
    plan = build_plan(list_sources(str(tmp_path)), size_mode(4), cpus=2)
    assert [p.rows for p in plan.partitions] == [4, 4, 4]
    assert plan.total_rows == 12
    # partition 1 spans both files; reading its ranges back gives records 4..7 in order
    got = []
    for r in plan.partitions[1].ranges:
        src = plan.sources[r.file]
        got += [
            json.loads(raw)["text"]
            for _, raw in read_line_range(src, r.start, r.stop, r.first_line)
        ]
    assert got == [f"record {i}" for i in range(4, 8)]
    assert plan.partitions[1].ranges[1].first_line == 2  # after b.jsonl's blank first line


def test_the_mb_bound_closes_partitions_and_a_big_record_stands_alone(tmp_path):
    big = json.dumps({"text": "x" * 3000}) + "\n"
    (tmp_path / "a.jsonl").write_text(lines(3) + big + lines(3, 3))
    mb = 2000 / (1024 * 1024)
    plan = build_plan(list_sources(str(tmp_path)), size_mode(100, mb), cpus=1)
    assert [p.rows for p in plan.partitions] == [3, 1, 3]
    assert all(p.bytes <= 2000 or p.rows == 1 for p in plan.partitions)


def test_manual_and_auto_modes(tmp_path):
    (tmp_path / "a.jsonl").write_text(lines(10))
    srcs = list_sources(str(tmp_path))
    manual = build_plan(srcs, PartitionConfig("manual", 10000, 128.0, 3), cpus=8)
    assert [p.rows for p in manual.partitions] == [4, 4, 2]
    auto = build_plan(srcs, PartitionConfig("auto", 10000, 128.0, None), cpus=2)
    assert [p.rows for p in auto.partitions] == [3, 3, 3, 1]  # two per CPU
    capped = build_plan(srcs, PartitionConfig("auto", 2, 128.0, None), cpus=1)
    assert max(p.rows for p in capped.partitions) == 2


def test_columnar_ranges_and_hashes_match_what_is_read_back(tmp_path):
    table = pa.table({"text": [f"t{i}" for i in range(2500)], "n": list(range(2500))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=300)
    plan = build_plan(list_sources(str(tmp_path)), size_mode(1000), cpus=1)
    assert [p.rows for p in plan.partitions] == [1024, 1024, 452]
    for part in plan.partitions:
        (r,) = part.ranges
        back = read_rows(plan.sources[r.file], r.start, r.stop)
        assert back.num_rows == r.rows and columnar_hash(back) == r.digest


def test_columnar_hash_ignores_chunking_and_sees_values():
    a = pa.table({"text": ["a", "b", None, "d"]})
    chunked = pa.concat_tables([a.slice(0, 1), a.slice(1)])
    assert columnar_hash(a) == columnar_hash(chunked)
    assert columnar_hash(a) != columnar_hash(pa.table({"text": ["a", "b", None, "e"]}))


def test_plan_is_deterministic_and_round_trips(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text(lines(9))
    (tmp_path / "b.json").write_text(json.dumps([{"text": "x"}, {"text": "y"}]))
    srcs = list_sources(str(tmp_path))
    plan = build_plan(srcs, size_mode(4), cpus=1)
    assert plan == build_plan(srcs, size_mode(4), cpus=1)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert plan.total_rows == 11
    # a .json array's units are its elements, addressed by index
    last = plan.partitions[-1].ranges[-1]
    assert plan.sources[last.file].path.endswith("b.json") and (last.start, last.stop) == (0, 2)
