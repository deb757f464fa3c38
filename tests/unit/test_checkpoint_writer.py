"""The background checkpoint writer: saves in order, one in flight, errors never lost."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from dj_runner.checkpoint import CheckpointDir, CheckpointKey
from dj_runner.events import EventLogger, read_events
from dj_runner.partition_task import CheckpointWriter


def table(n: int) -> pa.Table:
    return pa.table({"text": [f"row {i}" for i in range(n)]})


def test_saves_commit_in_order_and_the_last_before_exit(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy", preserve=True)
    events = EventLogger(tmp_path / "events", "job")
    with CheckpointWriter(store, events, pid=0) as saver:
        for step in range(1, 6):
            saver.save(CheckpointKey(step), table(step), f"op{step}")
    # Leaving the block waited for the last save: every commit is on disk, in order, valid.
    commits = store.commits()
    assert [c.key.step for c in commits] == [1, 2, 3, 4, 5]
    assert [store.load(c).num_rows for c in commits] == [1, 2, 3, 4, 5]
    events.close()
    saved = [e for e in read_events(tmp_path / "events") if e.event_type == "checkpoint_save"]
    assert [e.fields["operation_idx"] for e in saved] == [1, 2, 3, 4, 5]


def test_at_most_one_save_is_in_flight(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy", preserve=True)
    release = threading.Event()
    started: list[int] = []
    real_save = store.save

    def slow_save(key, tbl, op_name):
        started.append(key.step)
        assert release.wait(timeout=30)
        return real_save(key, tbl, op_name)

    store.save = slow_save  # type: ignore[method-assign]
    saver = CheckpointWriter(store, EventLogger(tmp_path / "events", "job"), pid=0)
    saver.save(CheckpointKey(1), table(1), "a")
    second = threading.Thread(target=saver.save, args=(CheckpointKey(2), table(2), "b"))
    second.start()
    second.join(timeout=0.5)
    # The second save waits for the first instead of queueing behind it.
    assert second.is_alive()
    assert started == [1]
    release.set()
    second.join(timeout=30)
    assert not second.is_alive()
    saver.__exit__(None, None, None)
    assert [c.key.step for c in store.commits()] == [1, 2]


def test_a_failed_save_surfaces_at_the_next_save(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy")

    def broken(key, tbl, op_name):
        raise OSError("disk full")

    store.save = broken  # type: ignore[method-assign]
    saver = CheckpointWriter(store, EventLogger(tmp_path / "events", "job"), pid=0)
    saver.save(CheckpointKey(1), table(1), "a")
    with pytest.raises(OSError, match="disk full"):
        saver.save(CheckpointKey(2), table(1), "b")
    saver.__exit__(None, None, None)


def test_a_failed_save_surfaces_on_exit(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy")

    def broken(key, tbl, op_name):
        raise OSError("disk full")

    store.save = broken  # type: ignore[method-assign]
    with (
        pytest.raises(OSError, match="disk full"),
        CheckpointWriter(store, EventLogger(tmp_path / "events", "job"), pid=0) as saver,
    ):
        saver.save(CheckpointKey(1), table(1), "a")


def test_an_op_error_still_lets_the_pending_save_commit(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy")
    with (
        pytest.raises(ValueError, match="op failed"),
        CheckpointWriter(store, EventLogger(tmp_path / "events", "job"), pid=0) as saver,
    ):
        saver.save(CheckpointKey(3), table(4), "a")
        raise ValueError("op failed")
    # The checkpoint before the failing op is committed, so a retry resumes from it.
    newest = store.newest_valid(at_most=CheckpointKey(10))
    assert newest is not None
    assert newest[0].key == CheckpointKey(3)
    assert newest[1].num_rows == 4
