"""The partition scheduler: capacity, retries with backoff, fatal errors, graceful stop.

``PartitionScheduler`` brings a set of partitions to one checkpoint target through a
``TaskBackend`` (submit, wait, result, cancel). It knows nothing about Ray: the executor hands
it a Ray backend, tests a fake one, so every scheduling decision is testable in milliseconds.

- At most ``capacity`` tasks run at once; queued partitions start in (due time, pid) order.
- A failed task is retried after ``RetryPolicy.delay(attempt)`` (exponential backoff) until
  ``max_retries``; then the partition is failed and the others go on.
- An error of a ``fatal`` type ends the stage at once: the other tasks are cancelled and the
  error is raised.
- When ``stop`` is requested, nothing more is submitted; the tasks in flight get until
  ``stop.deadline`` to finish (they stop themselves after their current checkpoint), then the
  rest are cancelled. The outcome says ``interrupted``.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dj_runner.errors import short_error

#: The longest the scheduler blocks without looking at its stop token.
POLL_S = 0.5


class TaskBackend(Protocol):
    def submit(self, part: Any, attempt: int) -> Hashable: ...
    def wait(self, handles: list[Hashable], timeout: float | None) -> list[Hashable]: ...
    def result(self, handle: Hashable) -> Any: ...
    def cancel(self, handle: Hashable) -> None: ...


class SchedulerListener(Protocol):
    def on_retry(self, part: Any, attempt: int, delay: float, error: BaseException) -> None: ...
    def on_failed(self, part: Any, attempt: int, error: BaseException) -> None: ...
    def on_done(self, part: Any, result: Any, attempt: int) -> None: ...
    def on_fatal(self, part: Any, error: BaseException) -> None: ...


class NullListener:
    def on_retry(self, part: Any, attempt: int, delay: float, error: BaseException) -> None: ...
    def on_failed(self, part: Any, attempt: int, error: BaseException) -> None: ...
    def on_done(self, part: Any, result: Any, attempt: int) -> None: ...
    def on_fatal(self, part: Any, error: BaseException) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    base_delay_s: float

    def should_retry(self, attempt: int) -> bool:
        """Whether a task that failed on ``attempt`` (0 = first try) is tried again."""
        return attempt < self.max_retries

    def delay(self, attempt: int) -> float:
        return self.base_delay_s * (2**attempt)


class StopToken:
    """Set by a signal handler; read by the scheduler. ``deadline`` is on ``time.monotonic``."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.signum: int | None = None

    def request(self, grace_s: float, signum: int | None = None) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + grace_s
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.deadline is not None


@dataclass
class StageOutcome:
    done: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    interrupted: bool = False


def wait_timeout(next_due: float | None, now: float, inflight: int, capacity: int) -> float | None:
    """How long the scheduler may block waiting for tasks: ``None`` means until a task ends.

    With room to start the next queued partition, wait until its retry is due. Without room,
    only a task's end can change anything, so block: a zero timeout there would spin the
    driver at full CPU for as long as the queue waits for capacity.
    """
    if next_due is None or inflight >= capacity:
        return None
    return max(0.0, next_due - now)


class PartitionScheduler:
    def __init__(
        self,
        backend: TaskBackend,
        policy: RetryPolicy,
        capacity: int,
        fatal: tuple[type[BaseException], ...] = (),
        listener: SchedulerListener | None = None,
        stop: StopToken | None = None,
        reached: Callable[[Any], bool] = lambda result: True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = POLL_S,
    ) -> None:
        self.backend = backend
        self.policy = policy
        self.capacity = max(1, capacity)
        self.fatal = fatal
        self.listener = listener or NullListener()
        self.stop = stop or StopToken()
        self.reached = reached  # whether a task's result reached the stage's target
        self.clock = clock
        self.sleep = sleep
        self.poll_s = poll_s

    def _cap(self, timeout: float | None) -> float:
        return self.poll_s if timeout is None else min(timeout, self.poll_s)

    def run(self, parts: list[Any]) -> StageOutcome:
        """Bring every partition of ``parts`` to the target; see the module docstring."""
        out = StageOutcome()
        seq = itertools.count()
        queue: list[tuple[float, int, int, Any, int]] = [
            (0.0, p.pid, next(seq), p, 0) for p in parts
        ]
        heapq.heapify(queue)
        inflight: dict[Hashable, tuple[Any, int]] = {}
        while queue or inflight:
            if self.stop.requested:
                self._drain(inflight, out)
                return out
            now = self.clock()
            while queue and queue[0][0] <= now and len(inflight) < self.capacity:
                _, _, _, part, attempt = heapq.heappop(queue)
                inflight[self.backend.submit(part, attempt)] = (part, attempt)
            timeout = wait_timeout(
                queue[0][0] if queue else None, now, len(inflight), self.capacity
            )
            if not inflight:
                self.sleep(self._cap(timeout or 0.0))  # backoff until the next retry is due
                continue
            for handle in self.backend.wait(list(inflight), self._cap(timeout)):
                part, attempt = inflight.pop(handle)
                try:
                    res = self.backend.result(handle)
                except self.fatal as exc:
                    for other in inflight:
                        self.backend.cancel(other)
                    self.listener.on_fatal(part, exc)
                    raise
                except Exception as exc:
                    if self.stop.requested:
                        continue  # stopping: a task that broke off is neither retried nor failed
                    if self.policy.should_retry(attempt):
                        delay = self.policy.delay(attempt)
                        self.listener.on_retry(part, attempt, delay, exc)
                        heapq.heappush(
                            queue, (self.clock() + delay, part.pid, next(seq), part, attempt + 1)
                        )
                    else:
                        out.failed[part.pid] = short_error(exc)
                        self.listener.on_failed(part, attempt, exc)
                    continue
                if not self.reached(res):
                    if self.stop.requested:
                        continue  # stopped early at a checkpoint, as asked
                    out.failed[part.pid] = f"stopped before its target ({res!r})"
                    continue
                out.done[part.pid] = res
                self.listener.on_done(part, res, attempt)
        return out

    def _drain(self, inflight: dict[Hashable, tuple[Any, int]], out: StageOutcome) -> None:
        """Stop requested: wait for the tasks in flight until the deadline, then cancel."""
        out.interrupted = True
        deadline = self.stop.deadline or self.clock()
        while inflight:
            left = deadline - time.monotonic()
            if left <= 0:
                for handle in inflight:
                    self.backend.cancel(handle)
                inflight.clear()
                return
            for handle in self.backend.wait(list(inflight), min(left, self.poll_s)):
                part, attempt = inflight.pop(handle)
                try:
                    res = self.backend.result(handle)
                except Exception:
                    continue
                if self.reached(res):
                    out.done[part.pid] = res
                    self.listener.on_done(part, res, attempt)
