"""The planner: bounds, ranges that cover the input exactly, hashes, and the saved plan."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

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
    assert [p.rows for p in plan.partitions] == [1000, 1000, 500]
    for part in plan.partitions:
        (r,) = part.ranges
        back = read_rows(plan.sources[r.file], r.start, r.stop)
        assert back.num_rows == r.rows and columnar_hash(back) == r.digest


def write_columnar(path: Path, fmt: str, table: pa.Table) -> None:
    if fmt == "parquet":
        pq.write_table(table, path / "a.parquet", row_group_size=2000)
    elif fmt == "arrow":
        with ipc.new_file(path / "a.arrow", table.schema) as writer:
            writer.write_table(table, max_chunksize=700)
    else:
        pacsv.write_csv(table, path / "a.csv")


def read_back(plan: Plan) -> list[pa.Table]:
    return [
        pa.concat_tables(read_rows(plan.sources[r.file], r.start, r.stop) for r in part.ranges)
        for part in plan.partitions
    ]


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "csv"])
def test_columnar_partitions_hold_the_row_bound_exactly(tmp_path, fmt):
    texts = [f"text {i}" for i in range(5000)]
    write_columnar(tmp_path, fmt, pa.table({"text": texts}))
    for bound, want in ((30, [30] * 166 + [20]), (100, [100] * 50), (1000, [1000] * 5)):
        plan = build_plan(list_sources(str(tmp_path)), size_mode(bound), cpus=1)
        assert [p.rows for p in plan.partitions] == want, (fmt, bound)
    back = read_back(plan)
    assert [t for tb in back for t in tb.column("text").to_pylist()] == texts


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "csv"])
def test_columnar_partitions_hold_the_mb_bound_as_arrow_bytes(tmp_path, fmt):
    """The MB bound measures a partition's rows in memory: their Arrow size as read."""
    table = pa.table({"text": [f"{i:05d} " + "x" * (i % 97) for i in range(3000)]})
    write_columnar(tmp_path, fmt, table)
    bound = 5 * 1024
    plan = build_plan(list_sources(str(tmp_path)), size_mode(10_000, bound / 1024 / 1024), cpus=1)
    assert len(plan.partitions) > 10
    back = read_back(plan)
    for part, got in zip(plan.partitions, back, strict=True):
        assert part.bytes <= bound and got.num_rows == part.rows
        assert got.nbytes <= bound + 64  # as held in memory (64: one validity bitmap's slack)
    # each partition is full: the next row would not have fitted
    for part, nxt in zip(plan.partitions[:-1], back[1:], strict=True):
        assert part.bytes + nxt.slice(0, 1).nbytes > bound
    assert sum(p.rows for p in plan.partitions) == 3000


def test_a_columnar_row_over_the_mb_bound_stands_alone(tmp_path):
    texts = ["a", "b", "y" * 5000, "c", "d"]
    pq.write_table(pa.table({"text": texts}), tmp_path / "a.parquet")
    plan = build_plan(list_sources(str(tmp_path)), size_mode(100, 1000 / 1024 / 1024), cpus=1)
    assert [p.rows for p in plan.partitions] == [2, 1, 2]


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
