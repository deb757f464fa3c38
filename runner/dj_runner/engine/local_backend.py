"""The scheduler's local backend: partition tasks in worker processes of this machine, no Ray.

Ray's start costs seconds (an embedded Ray: 2.5 s on a quiet machine, 4 s on a loaded one);
on an input small enough to be processed in less, that start is most of the job. The local
engine runs the same task body (``task_body.partition_task_entry``) on the same arguments, so
its checkpoints, its event log and its output are the same as on Ray: only where the task runs
differs.

- One partition, one CPU, or an input of at most ``INLINE_MAX_BYTES``: the tasks run in the
  driver's own process, one at a time (no process to start at all).
- Otherwise a pool of ``min(cpus, partitions)`` worker processes, started from a fork server
  that has imported the task's modules once. A worker ignores Ctrl-C (the driver stops the
  job: tasks end after their checkpoint, as on Ray) and ends when the driver ends, however it
  ends, so a killed driver leaves no worker writing behind it (and fencing refuses the commits
  of any that did).
- A worker that dies mid-task (killed, out of memory) fails that task, which the scheduler
  retries like any failed task; the pool is replaced.

``LocalEngine`` is what the executor gets instead of a Ray connection: ``cpus`` plans the
partitions exactly as Ray's CPU count would, so the plan does not depend on the engine.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Hashable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from dj_runner.engine.task_body import StageTask, partition_task_entry, raise_task_error

#: The engines a job may name; ``auto`` picks ``local`` for small inputs, else ``ray``.
ENGINES = ("auto", "ray", "local")
#: ``auto`` runs inputs up to this many bytes (summed file sizes) on the local engine, when no
#: Ray cluster is named. Below it the local engine finishes before an embedded Ray has started
#: (docs/benchmarks.md, "Engines: where the line is").
AUTO_LOCAL_MAX_BYTES = 64 * 1024 * 1024
#: Inputs up to this many bytes run in the driver's own process: starting worker processes
#: (a fork server importing Arrow and the ops, then the workers) costs more than it saves.
INLINE_MAX_BYTES = 2 * 1024 * 1024


class WorkerDied(RuntimeError):
    """A local worker process ended while it ran a partition task (retried like any failure)."""


@dataclass(frozen=True)
class LocalEngine:
    """The executor's view of the local engine (what a Ray connection tells it for Ray)."""

    cpus: int
    input_bytes: int
    address: str = "local worker processes"
    mode: str = "local"

    def workers(self, partitions: int) -> int:
        """Worker processes for a plan of ``partitions``; 1 = in the driver's own process."""
        if self.input_bytes <= INLINE_MAX_BYTES:
            return 1
        return max(1, min(self.cpus, partitions))


def machine_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (a container's
    limit), as Ray counts them for an embedded Ray."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    return max(1, cpus)


def choose_engine(engine: str, ray_named: bool, input_bytes: int) -> str:
    """The engine a job runs on: the one it names, else Ray when a Ray cluster is named, else
    local for inputs up to ``AUTO_LOCAL_MAX_BYTES`` and an embedded Ray above."""
    if engine != "auto":
        return engine
    if ray_named:
        return "ray"
    return "local" if input_bytes <= AUTO_LOCAL_MAX_BYTES else "ray"


def _worker_init(driver_pid: int) -> None:
    # Ctrl-C reaches the whole foreground process group: the driver alone decides how the job
    # stops. And a worker ends with the driver, however the driver ends: a killed driver must
    # leave no worker writing behind it. (Its parent is the fork server, which itself waits
    # for its workers, so the parent's death cannot be the signal.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pidfd = os.pidfd_open(driver_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux): fall back to polling
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:
            while True:
                time.sleep(0.5)
                try:
                    os.kill(driver_pid, 0)
                except ProcessLookupError:
                    break
        os._exit(1)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


class LocalPool:
    """The run's worker processes, shared by its stages; ``close`` ends them."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool: cf.ProcessPoolExecutor | None = None

    def executor(self) -> cf.ProcessPoolExecutor | None:
        """The process pool, started on first use; None when tasks run in the driver."""
        if self.workers == 1:
            return None
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["dj_runner.engine.task_body"])
            self._pool = cf.ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
            )
        return self._pool

    def replace_broken(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the workers: queued tasks are dropped, running ones end with their process."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            with contextlib.suppress(Exception):
                proc.terminate()
        for proc in processes:
            with contextlib.suppress(Exception):
                proc.join(10)


class LocalTaskBackend:
    """The scheduler's backend on local processes (``TaskBackend``)."""

    def __init__(self, pool: LocalPool, stage: StageTask) -> None:
        self._pool = pool
        self._stage = stage
        self._work_root = stage.work_root

    def _call_args(self, part: Any, attempt: int) -> tuple[Any, ...]:
        return self._stage.args(part, attempt)

    def submit(self, part: Any, attempt: int) -> Hashable:
        executor = self._pool.executor()
        if executor is not None:
            try:
                return executor.submit(partition_task_entry, *self._call_args(part, attempt))
            except BrokenProcessPool:
                self._pool.replace_broken()
                executor = self._pool.executor()
                assert executor is not None
                return executor.submit(partition_task_entry, *self._call_args(part, attempt))
        done: cf.Future[Any] = cf.Future()
        try:
            done.set_result(partition_task_entry(*self._call_args(part, attempt)))
        except Exception as exc:
            done.set_exception(exc)
        return done

    def wait(self, handles: list[Hashable], timeout: float | None) -> list[Hashable]:
        futures: list[cf.Future[Any]] = handles  # type: ignore[assignment]
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: Hashable) -> Any:
        future: cf.Future[Any] = handle  # type: ignore[assignment]
        try:
            return future.result()
        except BrokenProcessPool:
            self._pool.replace_broken()
            raise WorkerDied(
                "a local worker process ended while running this partition "
                "(killed, or out of memory)"
            ) from None
        except Exception as exc:
            raise_task_error(exc, self._work_root)

    def cancel(self, handle: Hashable) -> None:
        future: cf.Future[Any] = handle  # type: ignore[assignment]
        future.cancel()  # a running task ends after its checkpoint, or with the pool
