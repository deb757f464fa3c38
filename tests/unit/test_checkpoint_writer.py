"""The background checkpoint writer: saves in order, one in flight, errors never lost."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from dj_runner.engine.partition_task import CheckpointWriter
from dj_runner.observe.event_log import EventLogger, read_events
from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey
from dj_runner.store.workdir import WorkDir


def table(n: int) -> pa.Table:
    return pa.table({"text": [f"row {i}" for i in range(n)]})


def test_saves_commit_in_order_and_the_last_before_exit(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy", preserve=True)
    events = EventLogger(WorkDir(tmp_path).events_dir, "job")
    with CheckpointWriter(store, events, pid=0) as saver:
        for step in range(1, 6):
            saver.save(CheckpointKey(step), table(step), f"op{step}")
    # Leaving the block waited for the last save: every commit is on disk, in order, valid.
    commits = store.commits()
    assert [c.key.step for c in commits] == [1, 2, 3, 4, 5]
    assert [store.load(c).num_rows for c in commits] == [1, 2, 3, 4, 5]
    events.close()
    saved = [
        e for e in read_events(WorkDir(tmp_path).events_dir) if e.event_type == "checkpoint_save"
    ]
    assert [e.fields["operation_idx"] for e in saved] == [1, 2, 3, 4, 5]


def test_the_next_save_waits_for_the_previous_one(tmp_path) -> None:
    # At most one save in flight: save(2) must not return before save(1) has committed.
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy", preserve=True)
    release = threading.Event()
    calling = threading.Event()
    log: list[str] = []
    real_save = store.save

    def gated_save(key, tbl, op_name):
        if key.step == 1:
            assert release.wait(timeout=30)
        commit = real_save(key, tbl, op_name)
        log.append(f"committed {key.step}")
        return commit

    store.save = gated_save  # type: ignore[method-assign]
    saver = CheckpointWriter(store, EventLogger(WorkDir(tmp_path).events_dir, "job"), pid=0)
    saver.save(CheckpointKey(1), table(1), "a")

    def second() -> None:
        calling.set()
        saver.save(CheckpointKey(2), table(2), "b")
        log.append("save 2 returned")

    caller = threading.Thread(target=second)
    caller.start()
    assert calling.wait(timeout=30)
    release.set()
    caller.join(timeout=30)
    assert not caller.is_alive()
    saver.__exit__(None, None, None)
    # save(2)'s own commit may land before or after it returns; save(1)'s must come first.
    assert sorted(log) == ["committed 1", "committed 2", "save 2 returned"]
    assert log[0] == "committed 1"
    assert [c.key.step for c in store.commits()] == [1, 2]


def test_a_failed_save_surfaces_at_the_next_save(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy")

    def broken(key, tbl, op_name):
        raise OSError("disk full")

    store.save = broken  # type: ignore[method-assign]
    saver = CheckpointWriter(store, EventLogger(WorkDir(tmp_path).events_dir, "job"), pid=0)
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
        CheckpointWriter(store, EventLogger(WorkDir(tmp_path).events_dir, "job"), pid=0) as saver,
    ):
        saver.save(CheckpointKey(1), table(1), "a")


def test_an_op_error_still_lets_the_pending_save_commit(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "snappy")
    with (
        pytest.raises(ValueError, match="op failed"),
        CheckpointWriter(store, EventLogger(WorkDir(tmp_path).events_dir, "job"), pid=0) as saver,
    ):
        saver.save(CheckpointKey(3), table(4), "a")
        raise ValueError("op failed")
    # The checkpoint before the failing op is committed, so a retry resumes from it.
    newest = store.newest_valid(at_most=CheckpointKey(10))
    assert newest is not None
    assert newest[0].key == CheckpointKey(3)
    assert newest[1].num_rows == 4
