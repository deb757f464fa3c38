"""The scheduler's local backend: partition tasks in worker processes of this machine, no Ray.

Ray's start costs seconds (an embedded Ray: 2.5 s on a quiet machine, 4 s on a loaded one);
on an input small enough to be processed in less, that start is most of the job. The local
engine runs the same task body (``task_body.partition_task_entry``) on the same arguments, so
its checkpoints, its event log and its output are the same as on Ray: only where the task runs
differs.

- An input of at most ``INLINE_MAX_BYTES``: the tasks run in the driver's own process (no
  process to start at all), up to ``INLINE_TASKS_PER_CPU`` per CPU at once, each on a thread of
  its own. Such tasks spend most of their time waiting for their checkpoints' fsyncs (every
  save is three, one after the other); side by side their waits overlap. Their CPU work takes
  turns (one interpreter), which on inputs this small costs nothing measurable.
- One partition or one CPU (a larger input): the task runs in the driver's own process too,
  one at a time on a thread of its own.
- Otherwise at most ``min(cpus, partitions)`` tasks at once, each in a worker process of its
  own, forked from a fork server that has imported the task's modules once, and the recipe's
  ops with what they load once per process (fastText's model). A worker ignores Ctrl-C (the driver stops the
  job: tasks end after their checkpoint, as on Ray) and ends when the driver ends, however it
  ends, so a killed driver leaves no worker writing behind it (and fencing refuses the commits
  of any that did).
- A worker that dies mid-task (killed, out of memory) fails that task alone, which the scheduler
  retries like any failed task; the others run on.

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
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from typing import Any

from dj_runner.engine.environ import environ_for
from dj_runner.engine.task_body import StageTask, partition_task_entry, raise_task_error
from dj_runner.errors import InvalidInput
from dj_runner.recipe.keys import ENGINES

#: The engine of a job that names none (``--engine``, the recipe's ``engine``); else ``auto``.
ENGINE_ENV = "DJ_RUNNER_ENGINE"
#: ``auto`` runs inputs up to this many bytes (summed file sizes) on the local engine, when no
#: Ray cluster is named. On one machine the local engine was faster at every size measured, up
#: to 164 MB (docs/benchmarks.md, "The local engine, and where the line to Ray is"); above the
#: largest size measured, about six times it, an embedded Ray keeps the ground it was tested on.
AUTO_LOCAL_MAX_BYTES = 1024 * 1024 * 1024
#: Inputs up to this many bytes run in the driver's own process: starting worker processes
#: (a fork server importing Arrow and the ops, then the workers) costs more than it saves.
INLINE_MAX_BYTES = 2 * 1024 * 1024
#: Tasks of such an input at once, per CPU (threads of the driver: as many as the scheduler
#: keeps in flight, ``2 * cpus``), so that their checkpoint fsyncs overlap.
INLINE_TASKS_PER_CPU = 2


#: What the fork server imports once for every worker it forks: the task's modules, and the
#: recipe's ops with what they load (``ops.common.warm``, told which by the server's env).
FORK_SERVER_PRELOAD = ("dj_runner.engine.task_body", "dj_runner.ops.common.warm")

_server_started = threading.Lock()


def start_fork_server(server_env: Mapping[str, str]) -> Any:
    """The ``forkserver`` context, its server process started (once per process) with
    ``server_env`` set in the environment it starts with. Starting returns at once: the server
    imports and warms in its own process, so a driver that starts it before planning has it
    ready, or nearly, when the first task is forked (``LocalEngine.workers_likely``)."""
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    with _server_started:
        ctx.set_forkserver_preload(list(FORK_SERVER_PRELOAD))
        with environ_for(server_env):
            forkserver.ensure_running()
    return ctx


class WorkerDied(RuntimeError):
    """A local worker process ended while it ran a partition task (retried like any failure)."""


@dataclass(frozen=True)
class LocalEngine:
    """The executor's view of the local engine (what a Ray connection tells it for Ray)."""

    cpus: int
    input_bytes: int
    address: str = "local worker processes"
    mode: str = "local"

    def inline(self, partitions: int) -> bool:
        """Whether a plan of ``partitions`` runs in the driver's own process."""
        return self.input_bytes <= INLINE_MAX_BYTES or self.workers(partitions) == 1

    @property
    def workers_likely(self) -> bool:
        """Whether worker processes will run the tasks, known before the plan: an input too
        large to run inline on more than one CPU (a plan of one partition, which the recipe's
        bounds could still make, runs inline after all)."""
        return not self.inline(2)

    def workers(self, partitions: int) -> int:
        """Tasks at once for a plan of ``partitions``: threads of the driver when ``inline``,
        else worker processes."""
        if self.input_bytes <= INLINE_MAX_BYTES:
            return max(1, min(INLINE_TASKS_PER_CPU * self.cpus, partitions))
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


def default_engine(environ: Mapping[str, str] = os.environ) -> str:
    """The engine of a job that names none: ``DJ_RUNNER_ENGINE``, else ``auto``."""
    value = environ.get(ENGINE_ENV, "").strip()
    if not value:
        return "auto"
    if value not in ENGINES:
        raise InvalidInput(
            f"environment variable {ENGINE_ENV}: got {value!r}; expected one of "
            f"{', '.join(ENGINES)}"
        )
    return value


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


@dataclass
class _Task:
    future: cf.Future[Any]
    args: tuple[Any, ...]
    proc: Any = None  # multiprocessing.Process
    conn: Connection | None = None


def _child(
    conn: Connection, driver_pid: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    """A worker process: run one task and send back its result or its error."""
    _worker_init(driver_pid)
    outcome: tuple[bool, Any]
    try:
        outcome = (True, fn(*args))
    except BaseException as exc:
        outcome = (False, exc)
    try:
        conn.send(outcome)
    except Exception:  # an error that cannot be pickled: its type and message still go back
        error = outcome[1]
        conn.send((False, RuntimeError(f"{type(error).__name__}: {error}")))
    conn.close()


class LocalPool:
    """The run's local workers: at most ``workers`` partition tasks at once, each in a process
    of its own, so a worker that dies (killed, out of memory) fails its own task and no other.

    A dispatcher thread starts queued tasks as slots free up and completes their futures;
    ``close`` ends the workers still running and drops the queued tasks. ``inline`` (or one
    worker): the tasks run in the driver's own process instead, ``workers`` at a time, each on a
    thread of its own (the scheduler goes on seeing them in flight, as on Ray).
    """

    def __init__(
        self,
        workers: int,
        fn: Callable[..., Any] = partition_task_entry,
        server_env: Mapping[str, str] | None = None,
        inline: bool = False,
    ) -> None:
        self.workers = max(1, workers)
        self.inline = inline or self.workers == 1
        self._fn = fn  # a module-level function (it is sent to the workers by name)
        #: Set in the environment the fork server starts with (what its preloaded modules
        #: prepare once for every worker: an S3 client, see ``store.blobs.WARM_ENV``; the
        #: recipe's ops, ``ops.common.warm.WARM_OPS_ENV``).
        self._server_env = dict(server_env or {})
        self._lock = threading.Lock()
        self._queue: deque[_Task] = deque()
        self._running: list[_Task] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._ctx: Any = None
        self._inline: cf.ThreadPoolExecutor | None = None

    def submit(self, args: tuple[Any, ...]) -> cf.Future[Any]:
        if self.inline:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the local workers were closed")
                if self._inline is None:
                    self._inline = cf.ThreadPoolExecutor(
                        self.workers, thread_name_prefix="dj-runner-task"
                    )
                return self._inline.submit(self._fn, *args)
        future: cf.Future[Any] = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the local workers were closed")
            self._queue.append(_Task(future, args))
            if self._thread is None:
                self._ctx = start_fork_server(self._server_env)
                self._thread = threading.Thread(
                    target=self._dispatch, name="dj-runner-local-workers", daemon=True
                )
                self._thread.start()
        self._wake()
        return future

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"x")

    def _start(self, task: _Task) -> None:
        parent, child = multiprocessing.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child, args=(child, os.getpid(), self._fn, task.args), name="dj-runner-worker"
        )
        proc.start()
        child.close()
        task.proc, task.conn = proc, parent
        self._running.append(task)

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                while self._queue and len(self._running) < self.workers:
                    task = self._queue.popleft()
                    if not task.future.set_running_or_notify_cancel():
                        continue  # cancelled while queued
                    try:
                        self._start(task)
                    except Exception as exc:
                        task.future.set_exception(exc)
                running = list(self._running)
            waitables: list[Any] = [self._wake_r]
            for task in running:
                waitables += [task.conn, task.proc.sentinel]
            ready = mp_wait(waitables)
            if self._wake_r in ready:
                with contextlib.suppress(OSError, EOFError):
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
            for task in running:
                assert task.conn is not None
                if task.conn in ready or task.proc.sentinel in ready:
                    self._finish(task)

    def _finish(self, task: _Task) -> None:
        assert task.conn is not None
        outcome: tuple[bool, Any] | None = None
        try:
            if task.conn.poll():
                outcome = task.conn.recv()
        except (EOFError, OSError):
            outcome = None
        if outcome is None and task.proc.is_alive():
            return  # the sentinel fired first; the result follows
        task.proc.join()
        task.conn.close()
        with self._lock:
            self._running.remove(task)
        if outcome is None:
            task.future.set_exception(
                WorkerDied(
                    "the local worker process running this partition ended without a result "
                    f"(exit code {task.proc.exitcode}: killed, or out of memory)"
                )
            )
        elif outcome[0]:
            task.future.set_result(outcome[1])
        else:
            task.future.set_exception(outcome[1])

    def pids(self) -> list[int]:
        """The worker processes running tasks now."""
        with self._lock:
            return [task.proc.pid for task in self._running]

    def close(self) -> None:
        """Stop the workers: queued tasks are dropped, running ones end with their process."""
        if self._inline is not None:
            self._inline.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._closed = True
            queued, running = list(self._queue), list(self._running)
            self._queue.clear()
        self._wake()
        if self._thread is not None:
            self._thread.join(10)
        for task in queued:
            task.future.cancel()
        for task in running:
            with contextlib.suppress(Exception):
                task.proc.terminate()
        for task in running:
            with contextlib.suppress(Exception):
                task.proc.join(10)
            if not task.future.done():
                task.future.set_exception(WorkerDied("the local workers were closed"))
        self._wake_r.close()
        self._wake_w.close()


class LocalTaskBackend:
    """The scheduler's backend on local processes (``TaskBackend``)."""

    def __init__(self, pool: LocalPool, stage: StageTask) -> None:
        self._pool = pool
        self._stage = stage

    def submit(self, part: Any, attempt: int) -> Hashable:
        return self._pool.submit(self._stage.args(part, attempt))

    def wait(self, handles: list[Hashable], timeout: float | None) -> list[Hashable]:
        futures: list[cf.Future[Any]] = handles  # type: ignore[assignment]
        if any(f.cancelled() for f in futures):
            return [h for h in handles if h.cancelled()]  # type: ignore[attr-defined]
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: Hashable) -> Any:
        future: cf.Future[Any] = handle  # type: ignore[assignment]
        try:
            return future.result()
        except (WorkerDied, cf.CancelledError):
            raise
        except Exception as exc:
            raise_task_error(exc, self._stage.work_root)

    def cancel(self, handle: Hashable) -> None:
        future: cf.Future[Any] = handle  # type: ignore[assignment]
        future.cancel()  # a running task ends after its checkpoint, or with the workers
