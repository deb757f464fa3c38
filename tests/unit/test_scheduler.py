"""The partition scheduler against a fake backend: retries, backoff, capacity, fatal, stop.

No Ray: the backend is a table of scripted outcomes and the clock is virtual, so every
decision is checked exactly and in milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import pytest

from dj_runner.engine.scheduler import PartitionScheduler, RetryPolicy, StopToken, wait_timeout


@dataclass(frozen=True)
class Part:
    pid: int


class Boom(Exception):
    pass


class Fatal(Exception):
    pass


class FakeBackend:
    """Runs tasks instantly on the virtual clock; ``script[pid]`` lists outcomes per attempt."""

    def __init__(self, clock: FakeClock, script: dict[int, list[Any]] | None = None):
        self.clock = clock
        self.script = script or {}
        self.submitted: list[tuple[float, int, int]] = []  # (time, pid, attempt)
        self.cancelled: list[int] = []
        self.inflight_peak = 0
        self._handles: dict[int, tuple[Part, int]] = {}
        self._next = 0
        self.hold: set[int] = set()  # pids whose tasks never finish on their own

    def submit(self, part: Part, attempt: int) -> Hashable:
        self._next += 1
        self._handles[self._next] = (part, attempt)
        self.submitted.append((self.clock.now, part.pid, attempt))
        self.inflight_peak = max(self.inflight_peak, len(self._handles))
        return self._next

    def wait(self, handles: list[Hashable], timeout: float | None) -> list[Hashable]:
        ready = [h for h in handles if self._handles[h][0].pid not in self.hold][:1]
        if not ready and timeout is not None:
            self.clock.sleep(timeout)
        return ready

    def result(self, handle: Hashable) -> Any:
        part, attempt = self._handles.pop(handle)
        outcomes = self.script.get(part.pid, ["ok"])
        outcome = outcomes[min(attempt, len(outcomes) - 1)]
        if isinstance(outcome, BaseException):
            raise outcome
        return (part.pid, outcome)

    def cancel(self, handle: Hashable) -> None:
        part, _ = self._handles.pop(handle)
        self.cancelled.append(part.pid)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []

    def on_retry(self, part, attempt, delay, error):
        self.calls.append(("retry", part.pid, delay))

    def on_failed(self, part, attempt, error):
        self.calls.append(("failed", part.pid, attempt))

    def on_done(self, part, result, attempt):
        self.calls.append(("done", part.pid, attempt))

    def on_fatal(self, part, error):
        self.calls.append(("fatal", part.pid, type(error).__name__))


def scheduler(backend, clock, capacity=2, retries=3, delay=1.0, **kw) -> PartitionScheduler:
    return PartitionScheduler(
        backend,
        RetryPolicy(retries, delay),
        capacity,
        fatal=(Fatal,),
        listener=kw.pop("listener", Recorder()),
        clock=clock,
        sleep=clock.sleep,
        **kw,
    )


def test_every_partition_done_within_capacity_in_pid_order() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock)
    out = scheduler(backend, clock, capacity=3).run([Part(p) for p in (4, 0, 2, 1, 3)])
    assert sorted(out.done) == [0, 1, 2, 3, 4] and not out.failed and not out.interrupted
    assert [pid for _, pid, _ in backend.submitted] == [0, 1, 2, 3, 4]
    assert backend.inflight_peak == 3


def test_retries_back_off_exponentially_then_succeed() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, {1: [Boom("a"), Boom("b"), "ok"]})
    rec = Recorder()
    out = scheduler(backend, clock, retries=3, delay=0.5, listener=rec).run([Part(0), Part(1)])
    assert sorted(out.done) == [0, 1]
    attempts = [(t, a) for t, pid, a in backend.submitted if pid == 1]
    assert [a for _, a in attempts] == [0, 1, 2]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0  # 0.5 s, then doubled
    assert [c for c in rec.calls if c[0] == "retry"] == [("retry", 1, 0.5), ("retry", 1, 1.0)]


def test_exhausted_retries_fail_the_partition_and_the_others_go_on() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, {2: [Boom("always")]})
    rec = Recorder()
    out = scheduler(backend, clock, retries=1, delay=0.1, listener=rec).run(
        [Part(p) for p in range(4)]
    )
    assert sorted(out.done) == [0, 1, 3]
    assert out.failed == {2: "Boom: always"}
    assert ("failed", 2, 1) in rec.calls


def test_a_fatal_error_cancels_the_others_and_is_raised() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, {0: [Fatal("input changed")]})
    backend.hold = {1}
    rec = Recorder()
    with pytest.raises(Fatal):
        scheduler(backend, clock, capacity=2, listener=rec).run([Part(0), Part(1), Part(2)])
    assert backend.cancelled == [1]
    assert ("fatal", 0, "Fatal") in rec.calls
    assert [pid for _, pid, _ in backend.submitted] == [0, 1]  # nothing more was started


def test_a_result_short_of_the_target_is_a_failure() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, {1: ["short"]})
    out = scheduler(backend, clock, reached=lambda res: res[1] == "ok").run([Part(0), Part(1)])
    assert list(out.done) == [0] and 1 in out.failed


def test_stop_submits_nothing_more_and_waits_for_the_tasks_in_flight() -> None:
    clock = FakeClock()
    stop = StopToken()
    backend = FakeBackend(clock)
    rec = Recorder()

    class StopAfterFirst(Recorder):
        def on_done(self, part, result, attempt):
            rec.on_done(part, result, attempt)
            stop.request(grace_s=30)

    out = scheduler(backend, clock, capacity=2, listener=StopAfterFirst(), stop=stop).run(
        [Part(p) for p in range(6)]
    )
    assert out.interrupted
    assert [pid for _, pid, _ in backend.submitted] == [0, 1]  # partition 1 was in flight
    assert sorted(out.done) == [0, 1]  # ... and was let finish
    assert backend.cancelled == []


def test_stop_cancels_what_outlives_the_grace_period() -> None:
    clock = FakeClock()
    stop = StopToken()
    stop.request(grace_s=0.0)
    backend = FakeBackend(clock)
    backend.hold = {0}
    sched = scheduler(backend, clock, stop=stop)
    handle = backend.submit(Part(0), 0)
    out = sched.run([])  # nothing queued: returns at once
    assert not out.interrupted
    inflight = {handle: (Part(0), 0)}
    sched._drain(inflight, out)
    assert out.interrupted and backend.cancelled == [0] and not out.done


def test_retry_policy() -> None:
    policy = RetryPolicy(max_retries=2, base_delay_s=0.25)
    assert [policy.delay(a) for a in range(3)] == [0.25, 0.5, 1.0]
    assert policy.should_retry(1) and not policy.should_retry(2)


def test_blocks_while_the_queue_waits_for_capacity() -> None:
    # A queued partition is due now, but every slot is taken: only a task's end can help,
    # so the scheduler must block rather than poll with a zero timeout.
    assert wait_timeout(next_due=0.0, now=100.0, inflight=4, capacity=4) is None


def test_waits_until_a_retry_is_due_when_there_is_room() -> None:
    assert wait_timeout(next_due=102.5, now=100.0, inflight=1, capacity=4) == 2.5
    assert wait_timeout(next_due=99.0, now=100.0, inflight=1, capacity=4) == 0.0
    assert wait_timeout(next_due=None, now=100.0, inflight=2, capacity=4) is None


def test_the_scheduler_module_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = "import sys, dj_runner.engine.scheduler; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
