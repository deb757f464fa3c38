"""Per-job timers: one due time per job, kept in a heap and fired by one thread into a small pool.

A job has a timer only while something time-based is pending (`dj_operator.status.wakeup`: a
deadline, a TTL) or a reconcile failed and is retried with a backoff. Scheduling a job again
replaces its due time; `cancel` drops it. The thread ticks at least every `TICK` seconds, so
liveness is the thread's own heartbeat, never the end of a pass over the jobs.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)
Key = tuple[str, str]  # namespace, name

#: The longest the thread sleeps between two heartbeats.
TICK = 5.0


class Timers:
    """`schedule(key, at)` (monotonic seconds), `cancel(key)`; a due key calls `fire(key)` in
    the pool (never twice at once for one key: the reconcile takes the job's lock anyway)."""

    def __init__(
        self,
        fire: Callable[[Key], None],
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._due: dict[Key, float] = {}
        self._heap: list[tuple[float, Key]] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dj-timer")
        self._thread = threading.Thread(target=self._run, name="dj-timers", daemon=True)
        self._beat = clock()

    def start(self) -> Timers:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def schedule(self, key: Key, at: float) -> None:
        with self._cond:
            if self._due.get(key) == at:
                return
            self._due[key] = at
            heapq.heappush(self._heap, (at, key))
            self._cond.notify_all()

    def cancel(self, key: Key) -> None:
        with self._cond:
            self._due.pop(key, None)  # its heap entry is skipped when it comes up

    def pending(self) -> dict[Key, float]:
        with self._cond:
            return dict(self._due)

    def seconds_since_beat(self) -> float:
        return self._clock() - self._beat

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._beat = self._clock()
                now = self._clock()
                ready: list[Key] = []
                while self._heap and self._heap[0][0] <= now:
                    at, key = heapq.heappop(self._heap)
                    if self._due.get(key) == at:
                        del self._due[key]
                        ready.append(key)
                wait = TICK if not self._heap else min(TICK, self._heap[0][0] - now)
                if not ready:
                    self._cond.wait(max(wait, 0.0))
                    continue
            for key in ready:
                self._pool.submit(self._call, key)

    def _call(self, key: Key) -> None:
        try:
            self._fire(key)
        except Exception:
            log.exception("timer of %s/%s failed", *key)
