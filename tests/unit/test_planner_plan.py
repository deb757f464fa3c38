"""The planner's cutting and the plan's round trip, without Ray."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dj_runner.errors import ResumeRefused
from dj_runner.io.sources import list_sources
from dj_runner.plan.partitioner import Plan, build_plan
from dj_runner.plan.saved_plan import verify_content
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
    WorkDir(tmp_path).blobs.write_json(WorkDir.PLAN, plan.to_dict())
    back = Plan.from_dict(json.loads(WorkDir(tmp_path).plan_path.read_text()))
    assert back == plan


def _rewrite_same_size(path: Path, old: bytes, new: bytes) -> None:
    """Change the content but keep the size and the modification time."""
    st = path.stat()
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "json", "parquet"])
def test_verify_content_finds_a_change_size_and_mtime_hide(tmp_path: Path, kind: str) -> None:
    rows = [{"text": f"sample number {i:03d}"} for i in range(40)]
    path = tmp_path / f"a.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table({"text": [r["text"] for r in rows]}), path)
    else:
        body = (
            json.dumps(rows)
            if kind == "json"
            else "".join(
                json.dumps(r) + "\n" + ("\n" if i % 7 == 0 else "") for i, r in enumerate(rows)
            )
        ).encode()
        path.write_bytes(gzip.compress(body, mtime=0) if kind.endswith(".gz") else body)
    plan = build_plan(list_sources(str(path)), PartitionConfig("size", 9, 256.0, None), 1)
    every = [p.pid for p in plan.partitions]
    verify_content(plan, every)  # unchanged: passes
    if kind == "jsonl.gz":
        st = path.stat()
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()).replace(b"031", b"XYZ")))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif kind == "parquet":
        st = path.stat()
        texts = [r["text"].replace("031", "XYZ") for r in rows]
        pq.write_table(pa.table({"text": texts}), path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        _rewrite_same_size(path, b"031", b"XYZ")
    verify_content(plan, [0, 1, 2])  # sample 31 is in partition 3: not asked about
    with pytest.raises(ResumeRefused, match=rf"{path.name} changed .* partition 3"):
        verify_content(plan, every)
