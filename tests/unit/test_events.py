"""The event log: fields, rotation, several writing processes, following live."""

from __future__ import annotations

import json
import multiprocessing
import threading

from dj_runner.events import EventLogger, follow_events, log_files, read_events


def test_event_fields_and_filters(tmp_path):
    with EventLogger(tmp_path, "job-1") as log:
        log.log("job_start", "go")
        log.log("op_complete", "done", partition_id=3, operation_name="m", duration=0.5)
        log.log("op_complete", "done", partition_id=4, operation_name="f")
    events = read_events(tmp_path)
    assert [e.event_type for e in events] == ["job_start", "op_complete", "op_complete"]
    e = events[1]
    assert e.job_id == "job-1" and e.partition_id == 3 and e.get("duration") == 0.5
    assert e.get("process_id") and e.get("thread_id") and e.event_id
    assert len(read_events(tmp_path, partition_id=4)) == 1
    assert len(read_events(tmp_path, event_type="op_complete", operation_name="m")) == 1


def test_rotation_keeps_backup_count_files(tmp_path):
    with EventLogger(tmp_path, "j", max_log_size_mb=0.01, backup_count=2) as log:
        for i in range(2000):
            log.log("op_complete", "x" * 50, partition_id=i)
    files = log_files(tmp_path)
    assert len(files) == 3 and files[-1].name == "events.jsonl"
    assert int(files[0].name.rsplit(".", 1)[1]) < int(files[1].name.rsplit(".", 1)[1])
    assert all(f.stat().st_size <= 0.01 * 1024 * 1024 for f in files)
    ids = [e.partition_id for e in read_events(tmp_path)]
    assert ids == sorted(ids) and ids[-1] == 1999  # the newest survive, in order


def _writer(path: str, n: int, tag: int) -> None:
    with EventLogger(path, "j", max_log_size_mb=0.02, backup_count=50) as log:
        for i in range(n):
            log.log("op_complete", f"w{tag}", partition_id=tag, operation_idx=i)


def test_processes_write_whole_lines_across_rotations(tmp_path):
    procs = [
        multiprocessing.Process(target=_writer, args=(str(tmp_path), 1500, t)) for t in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = [line for f in log_files(tmp_path) for line in f.read_text().splitlines()]
    parsed = [json.loads(line) for line in lines]  # no interleaved or torn lines
    assert len(parsed) == 4500
    for tag in range(3):
        idx = sorted(p["operation_idx"] for p in parsed if p["partition_id"] == tag)
        assert idx == list(range(1500))


def test_follow_sees_events_written_later_and_across_rotation(tmp_path):
    log = EventLogger(tmp_path, "j", max_log_size_mb=0.005, backup_count=100)
    log.log("job_start")
    seen = []
    done = threading.Event()

    def follow():
        for ev in follow_events(tmp_path, until=("job_complete",), poll_interval=0.01):
            seen.append(ev)
        done.set()

    t = threading.Thread(target=follow)
    t.start()
    for i in range(500):
        log.log("op_complete", "y" * 40, operation_idx=i)
    log.log("job_complete")
    assert done.wait(30)
    t.join()
    assert len(log_files(tmp_path)) > 3
    assert seen[0].event_type == "job_start"
    assert [e.get("operation_idx") for e in seen[1:-1]] == list(range(500))
    assert seen[-1].event_type == "job_complete"


def test_follow_keeps_order_when_its_open_file_rotates_before_it_reads(tmp_path, monkeypatch):
    # The follower opens the current file, then lists the rotated ones. If the writer rotates
    # several times in between, the open file is now a backup older than the others: its own
    # events must still come before theirs.
    from dj_runner import events as events_module

    log = EventLogger(tmp_path, "j", max_log_size_mb=0.002, backup_count=100)
    log.log("job_start")
    real_backups = events_module._backups
    rotated = []

    def backups_after_rotations(log_dir):
        if not rotated:
            rotated.append(True)
            for i in range(60):
                log.log("op_complete", "y" * 40, operation_idx=i)
            log.log("job_complete")
            assert len(log_files(tmp_path)) > 3
        return real_backups(log_dir)

    monkeypatch.setattr(events_module, "_backups", backups_after_rotations)
    seen = list(follow_events(tmp_path, until=("job_complete",), poll_interval=0.01))
    assert rotated
    assert seen[0].event_type == "job_start"
    assert [e.get("operation_idx") for e in seen[1:-1]] == list(range(60))
    assert seen[-1].event_type == "job_complete"


def test_log_level_drops_lower_events(tmp_path):
    with EventLogger(tmp_path, "j", log_level="WARNING") as log:
        log.log("op_complete")
        log.log("partition_retry")
        log.log("job_failed")
    assert [(e.event_type, e.get("level")) for e in read_events(tmp_path)] == [
        ("partition_retry", "WARNING"),
        ("job_failed", "ERROR"),
    ]
