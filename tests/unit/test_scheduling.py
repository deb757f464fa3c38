"""The driver's scheduling loop: how long it may block waiting for partition tasks."""

from __future__ import annotations

from dj_runner.executor import wait_timeout


def test_blocks_while_the_queue_waits_for_capacity() -> None:
    # A queued partition is due now, but every slot is taken: only a task's end can help,
    # so the driver must block rather than poll with a zero timeout.
    assert wait_timeout(next_due=0.0, now=100.0, inflight=4, capacity=4) is None


def test_waits_until_a_retry_is_due_when_there_is_room() -> None:
    assert wait_timeout(next_due=102.5, now=100.0, inflight=1, capacity=4) == 2.5
    assert wait_timeout(next_due=99.0, now=100.0, inflight=1, capacity=4) == 0.0


def test_blocks_when_nothing_is_queued() -> None:
    assert wait_timeout(next_due=None, now=100.0, inflight=2, capacity=4) is None
