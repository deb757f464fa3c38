"""status.json: the writer's schema and atomic updates; the reader; the status command's view."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dj_runner.contract import STATUS_SCHEMA_VERSION
from dj_runner.observe.report import format_status, status
from dj_runner.observe.status_file import StatusWriter, read_status
from dj_runner.store.fencing import take_claim
from dj_runner.store.lock import WorkDirLock
from dj_runner.store.workdir import WorkDir

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_written_at_start_with_the_contracts_keys(tmp_path: Path) -> None:
    w = StatusWriter(tmp_path, "demo", "run-1", "/out/r.jsonl")
    w.write()
    st = read_status(tmp_path)
    assert st["schema_version"] == STATUS_SCHEMA_VERSION and st["state"] == "running"
    assert st["job_id"] == "demo" and st["run_id"] == "run-1"
    assert STAMP.match(st["started_at"]) and STAMP.match(st["updated_at"])
    assert st["finished_at"] is None and st["stage"] is None and st["resumed"] is None
    assert st["partitions"] == {"total": 0, "done": 0, "failed": 0, "running": 0}
    assert st["samples"] == {"in": 0, "out": 0, "rejected": 0}
    assert st["export_path"] == "/out/r.jsonl" and st["error"] is None
    assert not list(tmp_path.glob(".status.json.tmp-*"))


def test_updates_merge_and_finish(tmp_path: Path) -> None:
    w = StatusWriter(tmp_path, "demo", "run-1", None)
    w.update(partitions={"total": 4})
    w.update(partitions={"done": 1}, samples={"in": 10, "out": 8})
    w.finish("failed", {"op": "x", "partition": 2, "message": "boom"})
    st = read_status(tmp_path)
    assert st["partitions"] == {"total": 4, "done": 1, "failed": 0, "running": 0}
    assert st["samples"] == {"in": 10, "out": 8, "rejected": 0}
    assert st["state"] == "failed" and STAMP.match(st["finished_at"])
    assert st["error"] == {"op": "x", "partition": 2, "message": "boom"}


def test_reader_accepts_unknown_keys_and_a_missing_or_torn_file(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    WorkDir(tmp_path).status_path.write_text('{"state": "running", "future_key": 1')
    assert read_status(tmp_path) is None
    WorkDir(tmp_path).status_path.write_text(json.dumps({"state": "running", "future_key": 1}))
    assert read_status(tmp_path)["future_key"] == 1


def test_status_reports_a_dead_running_run_as_interrupted(tmp_path: Path) -> None:
    WorkDir(tmp_path).manifest_path.write_text("{}")
    w = StatusWriter(tmp_path, "demo", "run-1", None)
    w.update(partitions={"total": 3, "done": 1})
    lock = WorkDirLock(tmp_path, WorkDirLock.holder_for("run-1", "t"))
    lock.acquire()
    try:
        live = status(tmp_path)
        assert live["state"] == "running" and live["runner_alive"] is True
        assert live["holder"]["run_id"] == "run-1" and live["resumable"] is False
    finally:
        lock.release()
    dead = status(tmp_path)  # the runner is gone without finishing (SIGKILL)
    assert dead["state"] == "interrupted" and dead["recorded_state"] == "running"
    assert dead["resumable"] is True
    text = "\n".join(format_status(dead))
    assert "1 done, 0 failed, 0 running, 2 remaining (of 3)" in text
    assert "rerun the same command" in text


def test_status_reads_no_event_log(tmp_path: Path, monkeypatch) -> None:
    import dj_runner.observe.event_log
    import dj_runner.observe.report

    def no_log(*_a, **_k):
        raise AssertionError("status read the event log")

    monkeypatch.setattr(dj_runner.observe.report, "read_events", no_log)
    monkeypatch.setattr(dj_runner.observe.event_log, "read_events", no_log)
    WorkDir(tmp_path).manifest_path.write_text("{}")
    StatusWriter(tmp_path, "demo", "run-1", None).finish("succeeded")
    assert status(tmp_path)["state"] == "succeeded"


def test_empty_dir(tmp_path: Path) -> None:
    assert status(tmp_path)["state"] == "empty"


def test_estimated_completion_is_this_runs_pace_over_what_is_left() -> None:
    from datetime import UTC, datetime

    from dj_runner.observe.status_file import estimated_completion

    now = datetime(2026, 11, 30, 12, 1, 40, tzinfo=UTC)
    base = {"state": "running", "started_at": "2026-11-30T12:00:00.000Z"}
    # 10 total; 6 done + 1 failed, 3 of them restored: 4 finished in 100 s, 3 left -> 75 s.
    data = {
        **base,
        "partitions": {"total": 10, "done": 6, "failed": 1},
        "resumed": {"partitions_done": 3},
    }
    assert estimated_completion(data, now) == "2026-11-30T12:02:55.000Z"
    # Nothing finished by this run yet, nothing left, or not running: no estimate.
    assert estimated_completion({**data, "resumed": {"partitions_done": 7}}, now) is None
    assert (
        estimated_completion({**base, "partitions": {"total": 4, "done": 4, "failed": 0}}, now)
        is None
    )
    assert estimated_completion({**data, "state": "succeeded"}, now) is None


def test_the_writer_records_the_estimate_and_status_prints_it(tmp_path: Path) -> None:
    WorkDir(tmp_path).manifest_path.write_text("{}")
    w = StatusWriter(tmp_path, "demo", "run-1", None)
    w.min_interval_s = 0.0  # every update written at once
    w.update(partitions={"total": 4})
    assert read_status(tmp_path)["estimated_completion_at"] is None
    w.update(partitions={"done": 1})
    eta = read_status(tmp_path)["estimated_completion_at"]
    assert STAMP.match(eta) and eta >= read_status(tmp_path)["updated_at"]
    lock = WorkDirLock(tmp_path, WorkDirLock.holder_for("run-1", "t"))
    lock.acquire()
    try:
        assert f"estimated completion: {eta}" in format_status(status(tmp_path))
    finally:
        lock.release()
    w.finish("succeeded")
    assert read_status(tmp_path)["estimated_completion_at"] is None


def test_status_counts_the_runs_that_claimed_the_work_dir(tmp_path: Path) -> None:
    from dj_runner.store.fencing import take_claim

    WorkDir(tmp_path).manifest_path.write_text("{}")
    StatusWriter(tmp_path, "demo", "run-1", None).write()
    assert status(tmp_path)["runs"] == 0 and status(tmp_path)["restarts"] == 0
    take_claim(tmp_path, "run-1")
    assert status(tmp_path)["restarts"] == 0
    take_claim(tmp_path, "run-2")
    take_claim(tmp_path, "run-3")
    st = status(tmp_path)
    assert st["runs"] == 3 and st["restarts"] == 2
    assert "runs: 3 (2 restarts)" in format_status(st)


def test_updates_are_written_at_most_once_a_second_and_the_end_at_once(tmp_path: Path) -> None:
    """A burst of changes is one write now and one when the interval has passed."""
    import time

    w = StatusWriter(tmp_path, "demo", "run-1", None)
    w.min_interval_s = 0.5
    w.update(partitions={"total": 10})  # the first: written at once
    assert read_status(tmp_path)["partitions"]["total"] == 10
    first = read_status(tmp_path)["updated_at"]
    for done in range(1, 6):
        w.update(partitions={"done": done})
    assert read_status(tmp_path)["partitions"]["done"] == 0, "written within the interval"
    deadline = time.monotonic() + 10
    while read_status(tmp_path)["partitions"]["done"] != 5:
        assert time.monotonic() < deadline, "the deferred write never came"
        time.sleep(0.02)
    assert read_status(tmp_path)["updated_at"] > first
    w.update(partitions={"done": 6})
    w.finish("succeeded")  # at once, with every change before it
    st = read_status(tmp_path)
    assert st["state"] == "succeeded" and st["partitions"]["done"] == 6


def test_a_superseded_run_writes_status_json_no_more(tmp_path: Path) -> None:
    """Once a newer run has claimed the work dir, the old run's writer leaves the file alone:
    not its updates, not its end (a runner cut off with its node that runs on)."""
    old = StatusWriter(tmp_path, "job", "run-old", None, take_claim(tmp_path, "run-old"))
    old.write()
    assert not old.superseded()
    new = StatusWriter(tmp_path, "job", "run-new", None, take_claim(tmp_path, "run-new"))
    new.write()
    old.min_interval_s = 0.0
    old.update(partitions={"done": 3})
    old.finish("failed", {"op": None, "partition": None, "message": "superseded"})
    assert old.superseded()
    current = read_status(tmp_path)
    assert current is not None
    assert (current["run_id"], current["state"]) == ("run-new", "running")


def test_a_deferred_write_that_fails_raises_in_no_thread(tmp_path: Path, monkeypatch) -> None:
    """A write an update deferred runs on a timer's thread; on a full disk it must not end
    that thread with a traceback on stderr (no caller would see it): the next write, whose
    caller handles the error, meets it again."""
    import threading

    from dj_runner.errors import NoSpace

    w = StatusWriter(tmp_path, "demo", "run-1", None)
    w.min_interval_s = 0.05
    w.update(stage={"op": "a"})  # written at once; the next update is deferred

    def full(key: str, data: bytes) -> None:
        raise NoSpace(str(tmp_path / key), "no space left on device", 0, 1)

    monkeypatch.setattr(w.work.blobs, "write", full)
    escaped: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    w.update(stage={"op": "b"})
    timer = w._timer
    assert timer is not None
    timer.join(timeout=10)
    assert not timer.is_alive(), "the deferred write did not run within 10 s"
    assert escaped == []
    with pytest.raises(NoSpace):
        w.write()
