"""The executor end to end, in-process on an embedded Ray: output, partitioning, formats."""

from __future__ import annotations

import gzip
import json
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import zstandard

from dj_runner.contract import ExitCode
from dj_runner.engine.executor import Executor
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.checkpoint import COMMITS
from dj_runner.store.workdir import WorkDir

from conftest import DEMO, STANDARD_OPS, read_jsonl, reference_texts

pytestmark = pytest.mark.usefixtures("ray_session")


def run(tmp: Path, **overrides):
    raw = {
        "project_name": "t",
        "dataset_path": str(DEMO),
        "export_path": str(tmp / "out.jsonl"),
        "partition_size": 37,
        "process": STANDARD_OPS,
    }
    raw.update(overrides)
    raw = {k: v for k, v in raw.items() if v is not None}
    recipe = parse_recipe(raw)
    result = Executor(recipe, work_dir=tmp / "work").run()
    return recipe, result


def test_output_equals_single_table_reference(tmp_path):
    _, result = run(tmp_path)
    assert result.exit_code == ExitCode.OK, result.error
    out = read_jsonl(tmp_path / "out.jsonl")
    expected = reference_texts(read_jsonl(DEMO), STANDARD_OPS)
    assert [r["text"] for r in out] == expected
    assert result.rows_in == 201 and result.rows_out == len(expected)
    assert len(expected) < 201  # the filters and the deduplicator removed something


def test_partition_size_does_not_change_output(tmp_path):
    outs = []
    for size in (1000, 37, 5):
        _, result = run(tmp_path / str(size), partition_size=size)
        assert result.exit_code == ExitCode.OK
        outs.append((tmp_path / str(size) / "out.jsonl").read_bytes())
    assert outs[0] == outs[1] == outs[2]
    plan = json.loads(WorkDir(tmp_path / "5" / "work").plan_path.read_text())
    assert len(plan["partitions"]) == 41  # ceil(201 / 5)


def test_partitions_bounded_by_megabytes(tmp_path):
    _, result = run(tmp_path, partition_size=10_000, max_partition_size_mb=0.05)
    assert result.exit_code == ExitCode.OK
    plan = json.loads(WorkDir(tmp_path / "work").plan_path.read_text())
    limit = 0.05 * 1024 * 1024
    assert len(plan["partitions"]) > 5
    # A partition only goes over the bound when one sample alone is bigger.
    assert all(p["bytes"] <= limit or p["rows"] == 1 for p in plan["partitions"])


def test_dedup_is_global_across_partitions(tmp_path):
    dup = tmp_path / "dup.jsonl"
    rows = [{"text": f"document number {i % 7} with enough text"} for i in range(40)]
    dup.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, result = run(
        tmp_path,
        dataset_path=str(dup),
        partition_size=3,
        process=[{"document_deduplicator": {}}],
    )
    out = [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert out == [f"document number {i} with enough text" for i in range(7)]
    assert result.rows_out == 7


def test_heterogeneous_fields_are_kept_and_missing_ones_null(tmp_path, corpora):
    src = tmp_path / "mixed.jsonl"
    src.write_text(
        json.dumps({"text": "first sample, long enough to keep", "meta": {"a": 1}})
        + "\n"
        + json.dumps({"text": "second sample, long enough to keep", "lang": "en"})
        + "\n"
        + json.dumps({"text": "third sample, long enough to keep", "meta": "a string now"})
        + "\n"
    )
    _, result = run(tmp_path, dataset_path=str(src), process=[{"text_length_filter": {}}])
    assert result.exit_code == ExitCode.OK
    out = read_jsonl(tmp_path / "out.jsonl")
    assert out[0]["meta"] == {"a": 1} and out[0]["lang"] is None
    assert out[1]["lang"] == "en" and out[1]["meta"] is None
    assert out[2]["meta"] == "a string now"


def test_corpora_with_differing_fields(tmp_path, corpora):
    _, result = run(
        tmp_path,
        dataset_path=str(corpora / "*.jsonl"),
        partition_size=500,
        process=[{"text_length_filter": {"min_len": 1}}],
    )
    assert result.exit_code == ExitCode.OK, result.error
    total = sum(1 for f in corpora.glob("*.jsonl") for line in open(f) if line.strip())
    assert result.rows_in == total


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst", "parquet", "arrow", "csv", "json"])
def test_input_formats_give_the_same_output(tmp_path, fmt):
    records = [{"text": r["text"]} for r in read_jsonl(DEMO)]
    path = tmp_path / f"in.{fmt}"
    table = pa.table({"text": [r["text"] for r in records]})
    if fmt == "jsonl.gz":
        with gzip.open(path, "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
    elif fmt == "jsonl.zst":
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    elif fmt == "parquet":
        pq.write_table(table, path, row_group_size=16)
    elif fmt == "arrow":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=16)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text(json.dumps(records))
    _, result = run(tmp_path, dataset_path=str(path))
    assert result.exit_code == ExitCode.OK, result.error
    out = [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert out == reference_texts(records, STANDARD_OPS)


def test_directory_input_reads_files_in_sorted_order(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "b.jsonl").write_text(json.dumps({"text": "second file text is here"}) + "\n")
    (d / "a.jsonl").write_text(json.dumps({"text": "first file text is here"}) + "\n")
    (d / "notes.txt").write_text("ignored")
    run(tmp_path, dataset_path=str(d), process=[{"text_length_filter": {}}])
    out = [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert out == ["first file text is here", "second file text is here"]


@pytest.mark.parametrize("storage", ["parquet", "arrow", "jsonl"])
def test_checkpoint_formats_give_the_same_output(tmp_path, storage):
    _, result = run(tmp_path, storage_format=storage, preserve_intermediate_data=True)
    assert result.exit_code == ExitCode.OK
    files = list(WorkDir(tmp_path / "work").checkpoints_dir.rglob(f"op*.{storage}"))
    assert len(files) == 6 * len(STANDARD_OPS) + 6  # every op, plus the dedup hash step
    ref = reference_texts(read_jsonl(DEMO), STANDARD_OPS)
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == ref


def test_only_newest_checkpoint_kept_unless_preserved(tmp_path):
    run(tmp_path)
    per_partition = [
        sorted(p.name for p in d.iterdir() if p.suffix == ".parquet")
        for d in WorkDir(tmp_path / "work").checkpoints_dir.iterdir()
    ]
    # the last checkpoint, a selection after the last op (a filter), and its base: the full
    # checkpoint after the last mapper
    assert per_partition and all(
        files == ["op003.parquet", "op005.parquet"] for files in per_partition
    )


@pytest.mark.parametrize(
    ("strategy", "extra", "expected_steps"),
    [
        ("every_n_ops", {"n_ops": 2}, {2, 4, 5}),
        ("manual", {"op_names": ["clean_email_mapper"]}, {2, 5}),
        ("disabled", {}, {5}),
    ],
)
def test_checkpoint_strategies(tmp_path, strategy, extra, expected_steps):
    run(
        tmp_path,
        checkpoint={"strategy": strategy, **extra},
        preserve_intermediate_data=True,
    )
    commits = (WorkDir(tmp_path / "work").checkpoint_dir(0) / COMMITS).read_text()
    steps = {
        json.loads(line)["step"] for line in commits.splitlines() if not json.loads(line)["hashed"]
    }
    assert steps == expected_steps


def test_export_parquet_and_sharded_directory(tmp_path):
    _, result = run(
        tmp_path / "a", export_path=str(tmp_path / "out.parquet"), keep_stats_in_res_ds=True
    )
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == result.rows_out
    assert "__dj__stats__" in table.column_names
    assert "text_len" in {f.name for f in table.schema.field("__dj__stats__").type}

    _, result = run(tmp_path / "b", export_path=str(tmp_path / "shards"))
    shards = sorted((tmp_path / "shards").iterdir())
    assert [s.name for s in shards] == [".dj-runner-export"] + [
        f"part-{i:05d}.jsonl" for i in range(6)
    ]
    shards = shards[1:]
    texts = [r["text"] for s in shards for r in read_jsonl(s)]
    assert texts == reference_texts(read_jsonl(DEMO), STANDARD_OPS)
    assert "__dj__stats__" not in read_jsonl(shards[0])[0]


def test_auto_partitioning_uses_cluster_cpus(tmp_path):
    big = tmp_path / "big.jsonl"
    shutil.copy(DEMO, big)
    run(tmp_path, dataset_path=str(big), partition_size=None)
    plan = json.loads(WorkDir(tmp_path / "work").plan_path.read_text())
    assert plan["mode"] == "auto"
    # 2 CPUs in the test cluster: two partitions per CPU.
    assert len(plan["partitions"]) == 4


def test_python_event_api(tmp_path):
    recipe = parse_recipe(
        {
            "dataset_path": str(DEMO),
            "export_path": str(tmp_path / "out.jsonl"),
            "partition_size": 50,
            "process": STANDARD_OPS,
        }
    )
    ex = Executor(recipe, work_dir=tmp_path / "work", job_id="api")
    result = ex.run()
    assert result.exit_code == ExitCode.OK
    events = ex.get_events()
    assert events[0].event_type == "job_start" and events[-1].event_type == "job_complete"
    assert all(e.job_id == "api" for e in events)
    ops = ex.get_events(event_type="op_complete", partition_id=1)
    assert [e.get("operation_name") for e in ops] == [next(iter(o)) for o in STANDARD_OPS]
    # monitor_events replays a finished log and stops at the end event
    replay = list(ex.monitor_events(until=("job_complete",)))
    assert sorted(e.event_id for e in replay) == sorted(e.event_id for e in events)
    perf = ex.get_performance_summary()
    first = perf["ops"][0]
    assert first["op_name"] == "whitespace_normalization_mapper" and first["rows_in"] == 201
    assert first["partitions"] == 5 and first["rows_per_second"] > 0
    assert perf["rows_out"] == result.rows_out
    report = ex.generate_status_report()
    assert "Job api  [succeeded]" in report and "5 done, 0 failed, 0 running, 0 remaining" in report


def _monitor_in_thread(ex: Executor) -> tuple[threading.Thread, list]:
    seen: list = []
    thread = threading.Thread(target=lambda: seen.extend(ex.monitor_events()), daemon=True)
    thread.start()
    return thread, seen


@pytest.mark.parametrize("log_level", ["INFO", "WARNING"])
def test_monitor_events_ends_when_the_job_ends(tmp_path, log_level):
    recipe = parse_recipe(
        {
            "dataset_path": str(DEMO),
            "export_path": str(tmp_path / "out.jsonl"),
            "partition_size": 50,
            "event_logging": {"log_level": log_level},
            "process": STANDARD_OPS[:2],
        }
    )
    # A monitor started before the job (as from another process: an executor that never runs)
    watcher, seen = _monitor_in_thread(Executor(recipe, work_dir=tmp_path / "work"))
    ex = Executor(recipe, work_dir=tmp_path / "work", job_id="m")
    assert ex.run().exit_code == ExitCode.OK
    watcher.join(timeout=60)
    assert not watcher.is_alive(), "monitor_events() went on after the job ended"
    events = ex.get_events()
    assert [e.event_id for e in seen] == [e.event_id for e in events]
    if log_level == "INFO":
        assert seen[-1].event_type == "job_complete"
    # After the end, from the same executor: replays the log and ends.
    replay, seen_again = _monitor_in_thread(ex)
    replay.join(timeout=60)
    assert not replay.is_alive() and len(seen_again) == len(events)


def test_an_unknown_event_type_is_refused_by_name(tmp_path):
    recipe = parse_recipe(
        {
            "dataset_path": str(DEMO),
            "export_path": str(tmp_path / "o.jsonl"),
            "process": STANDARD_OPS[:1],
        }
    )
    ex = Executor(recipe, work_dir=tmp_path / "work")
    with pytest.raises(
        ValueError, match=r"unknown event type\(s\) \['op_eror'\]; valid: .*op_failed"
    ):
        ex.get_events(event_type="op_eror")
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        ex.monitor_events(event_type=["op_failed", "nope"])
    assert ex.get_events(event_type="job_interrupted") == []  # known: none logged yet
