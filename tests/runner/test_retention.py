"""Retention: the recipe's policy at a run's end, and ``dj-runner clean``, on real jobs (local
engine). Never removed: what a resume or an audit needs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dj_runner.cli import main
from dj_runner.contract import ExitCode
from dj_runner.engine.executor import Executor
from dj_runner.observe.event_log import list_segments, read_events
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.checkpoint import COMMITS
from dj_runner.store.lock import WorkDirLock
from dj_runner.store.workdir import WorkDir

from conftest import read_jsonl, run_cli, write_recipe

OPS = [
    {"whitespace_normalization_mapper": None},
    {"clean_email_mapper": None},
    {"text_length_filter": {"min_len": 3}},
]


def recipe_raw(tmp: Path, **extra: Any) -> dict[str, Any]:
    data = tmp / "in.jsonl"
    if not data.exists():
        data.write_text("".join(f'{{"text": "  sample {i} a@b.example "}}\n' for i in range(40)))
    return {
        "project_name": "ret",
        "dataset_path": str(data),
        "export_path": str(tmp / "out.jsonl"),
        "engine": "local",
        "np": 1,
        "partition_size": 10,
        "process": OPS,
        **extra,
    }


def run(tmp: Path, work: Path, **extra: Any) -> Any:
    return Executor(parse_recipe(recipe_raw(tmp, **extra)), work_dir=work).run()


def checkpoint_files(work: Path) -> dict[str, list[str]]:
    root = WorkDir(work).checkpoints_dir
    if not root.exists():
        return {}
    return {
        p.name: sorted(f.name for f in p.iterdir() if f.name != COMMITS and f.name[0] != ".")
        for p in sorted(root.iterdir())
    }


def test_final_keeps_each_partitions_last_checkpoint_and_reports_the_space(tmp_path):
    work = tmp_path / "work"
    result = run(
        tmp_path,
        work,
        preserve_intermediate_data=True,
        retention={"checkpoints": "final"},
    )
    assert result.exit_code == ExitCode.OK, result.error
    files = checkpoint_files(work)
    # the last checkpoint (a selection after the filter) and the full one it selects from
    final = ["op002.parquet", "op003.parquet"]
    assert len(files) == 4 and all(names == final for names in files.values())
    (ev,) = read_events(WorkDir(work).events_dir, event_type="cleanup")
    assert ev.get("entries_removed") == 4  # op001 of 4 partitions
    assert ev.get("bytes_freed") > 0 and "bytes freed" in ev.message
    # The job stays finished: a rerun computes nothing and exports the same output.
    before = (tmp_path / "out.jsonl").read_bytes()
    again = run(tmp_path, work, preserve_intermediate_data=True, retention={"checkpoints": "final"})
    assert again.exit_code == ExitCode.OK
    assert (tmp_path / "out.jsonl").read_bytes() == before
    runs = read_events(WorkDir(work).events_dir, event_type="op_start")
    assert len(runs) == 12  # the first run's 3 ops x 4 partitions; the rerun ran none


def test_preserve_intermediate_data_keeps_every_checkpoint_by_default(tmp_path):
    work = tmp_path / "work"
    assert run(tmp_path, work, preserve_intermediate_data=True).exit_code == ExitCode.OK
    assert all(len(names) == 3 for names in checkpoint_files(work).values())
    assert read_events(WorkDir(work).events_dir, event_type="cleanup") == []


def test_none_removes_checkpoints_but_not_what_an_audit_needs(tmp_path):
    work = tmp_path / "work"
    result = run(tmp_path, work, retention={"checkpoints": "none"})
    assert result.exit_code == ExitCode.OK, result.error
    wd = WorkDir(work)
    assert not wd.checkpoints_dir.exists()
    for kept in (wd.manifest_path, wd.plan_path, wd.result_path, wd.status_path):
        assert kept.exists(), kept
    assert read_events(wd.events_dir, event_type="job_complete")
    out = read_jsonl(tmp_path / "out.jsonl")
    # A rerun recomputes from the input and writes the same output.
    again = run(tmp_path, work, retention={"checkpoints": "none"})
    assert again.exit_code == ExitCode.OK
    assert read_jsonl(tmp_path / "out.jsonl") == out


def test_a_job_that_did_not_succeed_keeps_its_checkpoints_for_the_resume(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(
            f'{{"text": "sample {i}{" FAIL-ME" if i == 15 else ""} words"}}\n' for i in range(40)
        )
    )
    extra = {
        "max_retries": 0,
        "max_failed_partitions": 1,
        "retention": {"checkpoints": "none"},
        "process": [{"flaky_mapper": {"state_dir": str(state)}}, *OPS],
    }
    work = tmp_path / "work"
    assert run(tmp_path, work, **extra).exit_code == ExitCode.PARTIAL
    assert sorted(checkpoint_files(work)) == ["p00000", "p00002", "p00003"]
    assert main(["clean", str(work), "--checkpoints", "none"]) == ExitCode.OK
    assert sorted(checkpoint_files(work)) == ["p00000", "p00002", "p00003"]
    (state / "healed").touch()
    assert run(tmp_path, work, **extra).exit_code == ExitCode.OK
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 40
    assert not WorkDir(work).checkpoints_dir.exists()  # succeeded now: the policy applied


def test_clean_removes_leftovers_and_applies_the_policy(tmp_path, capsys):
    work = tmp_path / "work"
    assert run(tmp_path, work, preserve_intermediate_data=True).exit_code == ExitCode.OK
    wd = WorkDir(work)
    stale_stop = wd.stop_path("dead-run")
    stale_stop.touch()
    tmp = wd.checkpoint_dir(0) / ".op003.parquet.tmp-0123"
    tmp.write_bytes(b"x" * 1000)
    size_before = wd.size()

    assert main(["clean", str(work), "--checkpoints", "final", "--dry-run"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "would remove checkpoints/p00000/op001.parquet" in out and "would free" in out
    assert tmp.exists() and all(len(n) == 3 for n in checkpoint_files(work).values())

    assert main(["clean", str(work), "--checkpoints", "final"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert not stale_stop.exists() and not tmp.exists()
    assert all(n == ["op002.parquet", "op003.parquet"] for n in checkpoint_files(work).values())
    (ev,) = read_events(wd.events_dir, event_type="cleanup")
    freed = ev.get("bytes_freed")
    assert f"freed {freed:,} bytes (6 entries)" in out  # 4 x op001, the stop file, the tmp
    assert size_before - wd.size() >= freed - 4096  # the cleanup event itself adds a line
    assert wd.result_path.exists() and wd.plan_path.exists()


def test_clean_refuses_a_work_dir_a_runner_holds(tmp_path, capsys):
    work = tmp_path / "work"
    assert run(tmp_path, work, preserve_intermediate_data=True).exit_code == ExitCode.OK
    lock = WorkDirLock(work, WorkDirLock.holder_for("live-run", "2026-01-01T00:00:00.000000Z"))
    lock.acquire()
    try:
        assert main(["clean", str(work), "--checkpoints", "none"]) == ExitCode.LOCKED
    finally:
        lock.release()
    assert "is in use by run live-run" in capsys.readouterr().err
    assert all(len(n) == 3 for n in checkpoint_files(work).values())


def test_event_log_limits_remove_earlier_runs_segments_only(tmp_path):
    """Each ``dj-runner run`` process writes its own segments: three runs, three writers."""
    work = tmp_path / "work"
    recipe = write_recipe(tmp_path / "r.yaml", **recipe_raw(tmp_path))
    for _ in range(3):
        proc = run_cli("run", str(recipe), "--work-dir", str(work))
        assert proc.returncode == ExitCode.OK, proc.stderr
    segs = list_segments(WorkDir(work).events_dir)
    assert len({s.writer for s in segs}) == 3
    old = time.time() - 10 * 86400
    first = min(segs, key=lambda s: s.path.stat().st_mtime)
    os.utime(first.path, (old, old))

    assert main(["clean", str(work), "--event-log-max-age-days", "5"]) == ExitCode.OK
    left = list_segments(WorkDir(work).events_dir)
    assert first.path not in {s.path for s in left} and len(left) == 2 + 1  # + clean's own

    assert main(["clean", str(work), "--event-log-max-segments", "0"]) == ExitCode.OK
    left = read_events(WorkDir(work).events_dir)
    # The last run's log is kept whole; the earlier run's and the first clean's are gone.
    assert [e.event_type for e in left if e.event_type in ("job_start", "job_restart")] == [
        "job_restart"
    ]
    assert any(e.event_type == "job_complete" for e in left)


def test_bad_policy_is_refused_naming_the_key(tmp_path, capsys):
    work = tmp_path / "work"
    assert run(tmp_path, work).exit_code == ExitCode.OK
    assert main(["clean", str(work), "--event-log-max-age-days", "-1"]) == ExitCode.USAGE
    assert "retention.event_log_max_age_days" in capsys.readouterr().err
