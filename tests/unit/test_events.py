"""The event log: fields, per-writer segments, rotation limits, many writers, following live,
short writes and torn lines."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from dj_runner.errors import NoSpace
from dj_runner.observe import event_log as events_module
from dj_runner.observe.event_log import (
    EventLogger,
    follow_events,
    list_segments,
    log_files,
    read_events,
)

# A tiny rotation size: a segment holds only a handful of events.
TINY_MB = 4096 / (1024 * 1024)
FOLLOW_DEADLINE_S = 120


def test_event_fields_and_filters(tmp_path):
    with EventLogger(tmp_path, "job-1") as log:
        log.log("job_start", "go")
        log.log("op_complete", "done", partition_id=3, operation_name="m", duration=0.5)
        log.log("op_complete", "done", partition_id=4, operation_name="f")
    events = read_events(tmp_path)
    assert [e.event_type for e in events] == ["job_start", "op_complete", "op_complete"]
    e = events[1]
    assert e.job_id == "job-1" and e.partition_id == 3 and e.get("duration") == 0.5
    assert e.get("process_id") == os.getpid() and e.get("thread_id") and e.event_id
    assert len({ev.event_id for ev in events}) == 3
    assert len(read_events(tmp_path, partition_id=4)) == 1
    assert len(read_events(tmp_path, event_type="op_complete", operation_name="m")) == 1


def test_each_process_writes_its_own_segment_named_by_host_and_pid(tmp_path):
    with EventLogger(tmp_path, "j") as a, EventLogger(tmp_path, "j") as b:
        a.log("job_start")
        b.log("op_start")
    (seg,) = list_segments(tmp_path)  # loggers of one process share its segment
    assert f"-{os.getpid()}-" in seg.path.name and seg.path.name.endswith("-000001.jsonl")


def test_rotation_keeps_each_file_and_the_backup_count_within_limits(tmp_path):
    limit = 0.01 * 1024 * 1024
    with EventLogger(tmp_path, "j", max_log_size_mb=0.01, backup_count=2) as log:
        for i in range(2000):
            log.log("op_complete", "x" * 50, partition_id=i)
        current = log.path
    files = log_files(tmp_path)
    # 2000 events of ~250 bytes fill ~50 segments: only the two newest finished ones and the
    # one being written survive.
    assert len(files) == 3 and files[-1] == current
    assert all(f.stat().st_size <= limit for f in files)
    ids = [e.partition_id for e in read_events(tmp_path)]
    assert ids == list(range(ids[0], 2000))  # the newest survive, in order, none missing
    assert ids[0] > 1500


def test_backup_count_zero_keeps_only_the_current_segment(tmp_path):
    with EventLogger(tmp_path, "j", max_log_size_mb=TINY_MB, backup_count=0) as log:
        for i in range(200):
            log.log("op_complete", "x" * 50, partition_id=i)
    assert len(log_files(tmp_path)) == 1
    assert read_events(tmp_path)[-1].partition_id == 199


def _writer(path: str, n: int, tag: int, max_mb: float, backup_count: int) -> None:
    with EventLogger(path, "j", max_log_size_mb=max_mb, backup_count=backup_count) as log:
        for i in range(n):
            log.log("op_complete", f"w{tag}", partition_id=tag, operation_idx=i)
        log.log("processing_complete", f"w{tag} done", partition_id=tag)


def _start_writers(path: Path, n_writers: int, n: int, max_mb: float, backup_count: int):
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_writer, args=(str(path), n, t, max_mb, backup_count))
        for t in range(n_writers)
    ]
    for p in procs:
        p.start()
    return procs


def _join(procs) -> None:
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def test_processes_write_whole_lines_each_file_within_its_limit(tmp_path):
    procs = _start_writers(tmp_path, 6, 1500, TINY_MB, backup_count=100_000)
    _join(procs)
    files = log_files(tmp_path)
    assert len({s.writer for s in list_segments(tmp_path)}) == 6
    assert all(f.stat().st_size <= 4096 for f in files)
    lines = [line for f in files for line in f.read_bytes().split(b"\n")[:-1]]
    parsed = [json.loads(line) for line in lines]  # no interleaved or torn lines
    assert len(parsed) == 6 * 1501
    for tag in range(6):
        idx = [
            p["operation_idx"] for p in parsed if p["partition_id"] == tag and "operation_idx" in p
        ]
        assert idx == list(range(1500))  # log_files lists each writer's segments in order


def test_retention_across_writers_keeps_the_total_within_its_limit(tmp_path):
    backup_count, n_writers = 8, 4
    procs = _start_writers(tmp_path, n_writers, 1000, TINY_MB, backup_count)
    _join(procs)
    segments = list_segments(tmp_path)
    finished = events_module._finished(segments)
    assert len(finished) <= backup_count
    assert len(segments) <= backup_count + n_writers
    assert sum(s.path.stat().st_size for s in segments) <= (backup_count + n_writers) * 4096
    # what survives is each writer's newest events, still whole lines in order
    for tag in range(n_writers):
        idx = [
            e.get("operation_idx")
            for e in read_events(tmp_path, partition_id=tag, event_type="op_complete")
        ]
        assert idx and idx == list(range(idx[0], 1000))


def test_follower_loses_nothing_with_many_writers_and_tiny_segments(tmp_path):
    n_writers, n = 6, 1000
    EventLogger(tmp_path, "j").close()  # the directory exists before the follower starts
    seen: list = []
    done_writers: set[int] = set()
    stop = threading.Event()
    procs = _start_writers(tmp_path, n_writers, n, TINY_MB, backup_count=1_000_000)
    for ev in follow_events(tmp_path, poll_interval=0.001, stop=stop, timeout=FOLLOW_DEADLINE_S):
        seen.append(ev)
        if ev.event_type == "processing_complete":
            done_writers.add(ev.partition_id)
            if len(done_writers) == n_writers:
                stop.set()
    _join(procs)
    assert done_writers == set(range(n_writers)), "the follower hit its deadline"
    assert len(list_segments(tmp_path)) > n_writers * 30  # it really crossed many rotations
    assert len(seen) == n_writers * (n + 1)
    assert len({e.event_id for e in seen}) == len(seen)  # nothing twice
    for tag in range(n_writers):
        idx = [e.get("operation_idx") for e in seen if e.partition_id == tag][:-1]
        assert idx == list(range(n))  # nothing lost, each writer's order kept


def test_follow_sees_events_written_later_and_across_rotation(tmp_path):
    log = EventLogger(tmp_path, "j", max_log_size_mb=0.005, backup_count=100)
    log.log("job_start")
    seen = []
    done = threading.Event()

    def follow():
        for ev in follow_events(
            tmp_path, until=("job_complete",), poll_interval=0.01, timeout=FOLLOW_DEADLINE_S
        ):
            seen.append(ev)
        done.set()

    t = threading.Thread(target=follow)
    t.start()
    for i in range(500):
        log.log("op_complete", "y" * 40, operation_idx=i)
    log.log("job_complete")
    assert done.wait(FOLLOW_DEADLINE_S)
    t.join()
    log.close()
    assert len(log_files(tmp_path)) > 3
    assert seen[0].event_type == "job_start"
    assert [e.get("operation_idx") for e in seen[1:-1]] == list(range(500))
    assert seen[-1].event_type == "job_complete"


def test_follow_reads_a_segment_to_its_end_when_its_writer_moves_on_between_polls(
    tmp_path, monkeypatch
):
    # The follower lists the segments, then the writer fills the current one and starts
    # several more before the follower reads: the lines at the end of each are still seen.
    log = EventLogger(tmp_path, "j", max_log_size_mb=0.002, backup_count=100)
    log.log("job_start")
    real_list = events_module.list_segments
    wrote = []

    def list_then_write(log_dir):
        listing = real_list(log_dir)
        if not wrote:
            wrote.append(True)
            for i in range(60):
                log.log("op_complete", "y" * 40, operation_idx=i)
            log.log("job_complete")
            assert len(log_files(tmp_path)) > 3
        return listing

    monkeypatch.setattr(events_module, "list_segments", list_then_write)
    seen = list(
        follow_events(
            tmp_path, until=("job_complete",), poll_interval=0.01, timeout=FOLLOW_DEADLINE_S
        )
    )
    log.close()
    assert wrote
    assert seen[0].event_type == "job_start"
    assert [e.get("operation_idx") for e in seen[1:-1]] == list(range(60))
    assert seen[-1].event_type == "job_complete"


def test_follow_filters_and_skips_the_past_and_stops_at_its_deadline(tmp_path):
    with EventLogger(tmp_path, "j") as log:
        log.log("op_complete", partition_id=1)
        got = []
        stop = threading.Event()

        def follow():
            for ev in follow_events(
                tmp_path,
                from_start=False,
                partition_id=2,
                until=("job_complete",),
                poll_interval=0.01,
                stop=stop,
                timeout=FOLLOW_DEADLINE_S,
            ):
                got.append(ev)

        t = threading.Thread(target=follow)
        t.start()
        # the follower has skipped the past once it sees a marker written after it started
        marker = [0]

        def follower_is_live() -> bool:
            marker[0] += 1
            log.log("op_start", partition_id=2, operation_idx=marker[0])
            return any(e.event_type == "op_start" for e in got)

        from tests.harness.waiting import wait_for

        wait_for(follower_is_live, timeout=30, what="the follower to see new events")
        log.log("op_complete", partition_id=1)
        log.log("op_complete", partition_id=2)
        log.log("job_complete")
        t.join(FOLLOW_DEADLINE_S)
        assert not t.is_alive()
    assert all(e.partition_id == 2 for e in got)
    assert got[-1].event_type == "op_complete"  # job_complete stopped it; filtered out itself
    assert [e.event_type for e in got].count("op_complete") == 1
    # a follower with nothing to read returns at its deadline
    assert list(follow_events(tmp_path, from_start=False, timeout=0.2, poll_interval=0.01)) == []


def test_a_short_write_is_completed(tmp_path, monkeypatch):
    real_write = os.write

    def at_most_7_bytes(fd, data):
        return real_write(fd, bytes(data[:7]))

    monkeypatch.setattr(events_module, "_write_fd", at_most_7_bytes)
    with EventLogger(tmp_path, "j") as log:
        for i in range(5):
            log.log("op_complete", "é" * 20, operation_idx=i)
    assert [e.get("operation_idx") for e in read_events(tmp_path)] == list(range(5))


def test_a_failed_write_leaves_one_unreadable_line_never_a_glued_one(tmp_path, monkeypatch):
    real_write = os.write
    disk_full = [0]  # calls left before the disk is full; 0: not full

    def write(fd, data):
        # the disk fills in the middle of a line: a short write, then ENOSPC
        if disk_full[0] == 2:
            disk_full[0] = 1
            return real_write(fd, bytes(data[:10]))
        if disk_full[0] == 1:
            disk_full[0] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(events_module, "_write_fd", write)
    with EventLogger(tmp_path, "j") as log:
        log.log("op_complete", operation_idx=0)
        disk_full[0] = 2
        with pytest.raises(NoSpace, match="no space left on device") as failed:
            log.log("op_complete", operation_idx=1)
        assert failed.value.path == str(log.path)  # names the segment it could not write
        log.log("op_complete", operation_idx=2)
    assert [e.get("operation_idx") for e in read_events(tmp_path)] == [0, 2]
    lines = log_files(tmp_path)[0].read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[-1] == b""  # event 0, the fragment, event 2
    assert json.loads(lines[2])["operation_idx"] == 2


def test_a_torn_write_is_closed_by_the_next_logger_of_the_process(tmp_path, monkeypatch):
    # A Ray worker runs the next partition's task with a new logger on the same segment: the
    # fragment the last task's full disk left must be ended, not crash the new logger.
    real_write = os.write
    script: list[str] = []  # the next write calls: what write(2) does as a disk fills

    def write(fd, data):
        step = script.pop(0) if script else "ok"
        if step == "short":
            return real_write(fd, bytes(data[:10]))
        if step == "full":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(events_module, "_write_fd", write)
    with EventLogger(tmp_path, "j") as log:
        log.log("op_complete", operation_idx=0)
        script[:] = ["short", "full"]
        with pytest.raises(NoSpace):
            log.log("op_complete", operation_idx=1)
    with EventLogger(tmp_path, "j") as log:  # the fd was closed with the last logger
        log.log("op_complete", operation_idx=2)
    assert [e.get("operation_idx") for e in read_events(tmp_path)] == [0, 2]
    assert len(log_files(tmp_path)) == 1


def test_readers_skip_a_torn_last_line(tmp_path):
    with EventLogger(tmp_path, "j") as log:
        log.log("job_start")
    # a writer killed in the middle of a line leaves a fragment at the end of its segment
    torn = tmp_path / "events-otherhost-77-0123456789-000001.jsonl"
    torn.write_bytes(b'{"event_type": "op_complete", "timestamp": 1.0}\n{"event_type": "op_c')
    assert [e.event_type for e in read_events(tmp_path)] == ["op_complete", "job_start"]
    followed = list(follow_events(tmp_path, timeout=0.3, poll_interval=0.01))
    assert sorted(e.event_type for e in followed) == ["job_start", "op_complete"]


def test_logs_of_the_single_file_format_are_still_read(tmp_path):
    (tmp_path / "events.jsonl.000001").write_text(
        json.dumps({"event_type": "job_start", "timestamp": 1.0}) + "\n"
    )
    (tmp_path / "events.jsonl").write_text(
        json.dumps({"event_type": "job_complete", "timestamp": 2.0}) + "\n"
    )
    with EventLogger(tmp_path, "j") as log:
        log.log("job_restart")
    assert [e.event_type for e in read_events(tmp_path)] == [
        "job_start",
        "job_complete",
        "job_restart",
    ]


def test_a_forked_child_writes_a_segment_of_its_own(tmp_path):
    log = EventLogger(tmp_path, "j")
    log.log("job_start")
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=log.log, args=("op_start",))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    log.log("job_complete")
    log.close()
    assert len({s.writer for s in list_segments(tmp_path)}) == 2
    assert len(read_events(tmp_path)) == 3


def test_log_level_drops_lower_events(tmp_path):
    with EventLogger(tmp_path, "j", log_level="WARNING") as log:
        log.log("op_complete")
        log.log("partition_retry")
        log.log("job_failed")
    assert [(e.event_type, e.get("level")) for e in read_events(tmp_path)] == [
        ("partition_retry", "WARNING"),
        ("job_failed", "ERROR"),
    ]
