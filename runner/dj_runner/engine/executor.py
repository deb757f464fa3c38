"""The job driver: claim the work dir, plan, run the stages, cross global ops, export.

``Executor(recipe).run()`` is the whole job; it is resumable: running it again on the same
work dir continues from each partition's newest valid checkpoint and never recomputes a
finished partition. The pieces live in their own modules: the work dir's paths
(``store/workdir.py``), the lock (``store/lock.py``), the claim and fencing token
(``store/fencing.py``), the manifest, the fingerprint and which work dir a run uses
(``store/manifest.py``), the scheduling loop (``scheduler.py``, here given a Ray backend),
global-op decisions (``global_decisions.py``, the op's own ``decide``), the export
(``io/export.py``) and the live status (``observe/status_file.py``).
This module orchestrates them and owns the Ray task body's entry point.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dj_runner import contract
from dj_runner.contract import SIGNAL_EXIT_BASE, ExitCode
from dj_runner.engine.finalize import broken_finals, export_finals
from dj_runner.engine.global_decisions import GlobalDecision, read_decision, removed, save_decision
from dj_runner.engine.local_backend import (
    LocalEngine,
    LocalPool,
    LocalTaskBackend,
    choose_engine,
    default_engine,
    machine_cpus,
    start_fork_server,
)
from dj_runner.engine.partition_task import (
    PartitionResult,
    SourceChanged,
    count_rejects,
    decision_in_place,
    in_place_target,
)
from dj_runner.engine.ray_backend import RayTaskBackend
from dj_runner.engine.ray_env import RayAddressError, resolve_target
from dj_runner.engine.retention import unneeded
from dj_runner.engine.scheduler import (
    PartitionScheduler,
    RetryPolicy,
    StageOutcome,
    StopToken,
    wait_timeout,
)
from dj_runner.engine.task_body import StageTask, event_logger
from dj_runner.errors import (
    InputError,
    Interrupted,
    InvalidInput,
    MalformedRecordError,
    NoSpace,
    OpError,
    RayUnavailable,
    RecipeError,
    ResumeRefused,
    RunnerError,
    short_error,
)
from dj_runner.io.export import check_export_target, remove_export
from dj_runner.observe.console import NoProgress, Progress
from dj_runner.observe.event_log import (
    Event,
    EventLogger,
    check_event_types,
    follow_events,
    read_events,
)
from dj_runner.observe.report import performance_summary, status, status_report
from dj_runner.observe.resources import add as add_resources
from dj_runner.observe.status_file import StatusWriter, now_rfc3339, read_status
from dj_runner.ops.common.warm import warm_env as ops_warm_env
from dj_runner.plan.manifest import claim_work_dir, default_work_dir, resolve_work_dir
from dj_runner.plan.partitioner import Plan
from dj_runner.plan.saved_plan import load_or_build_plan, verify_content
from dj_runner.recipe.parse import Recipe
from dj_runner.store.blobs import s3_retry_report, total_retries, warm_env
from dj_runner.store.checkpoint import (
    CheckpointDir,
    CheckpointKey,
    Commit,
    InvalidCheckpoint,
    partition_store,
    release_held,
)
from dj_runner.store.fencing import Fence, Superseded, new_run_id, take_claim
from dj_runner.store.location import configure_s3
from dj_runner.store.lock import WorkDirLock, is_locked
from dj_runner.store.nospace import is_no_space
from dj_runner.store.workdir import WorkDir

__all__ = [
    "Executor",
    "JobResult",
    "best_effort",
    "default_work_dir",
    "wait_timeout",
]

#: Errors that end the job at once: more attempts cannot help. A full disk stays full while the
#: job runs (its checkpoints only add up until the export), so retrying a partition would redo
#: its ops to fail at the same write, and a partition failed for want of space must never
#: count towards ``max_failed_partitions`` (a "partially succeeded" export missing data).
FATAL_ERRORS = (SourceChanged, MalformedRecordError, RayUnavailable, Superseded, NoSpace)


@dataclass
class JobResult:
    status: str  # succeeded | partially_succeeded | failed | interrupted
    job_id: str
    work_dir: str
    export_path: str | None
    total_partitions: int = 0
    failed_partitions: list[int] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    duration: float = 0.0
    error: str | None = None
    run_id: str = ""
    code: int | None = None  # the exit code when the status alone does not decide it

    @property
    def exit_code(self) -> int:
        if self.code is not None:
            return self.code
        return {
            "succeeded": ExitCode.OK,
            "partially_succeeded": ExitCode.PARTIAL,
            "interrupted": ExitCode.INTERRUPTED,
        }.get(self.status, ExitCode.FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "exit_code": self.exit_code}


class _StageListener:
    """What the driver does when the scheduler reports: events, progress, status."""

    def __init__(
        self, ex: Executor, target: CheckpointKey, final: bool, parts: int, capacity: int
    ) -> None:
        self.ex = ex
        self.target = target
        self.final = final
        self.remaining = parts
        self.capacity = capacity
        #: Partitions with a committed checkpoint of this stage (those done before it too).
        self.committed = len(ex._parts) - parts

    def _settled(self) -> dict[str, int]:
        """One partition finished or failed: the running count for status.json."""
        self.remaining -= 1
        return {"running": min(self.remaining, self.capacity)}

    def on_retry(self, part: Any, attempt: int, delay: float, error: BaseException) -> None:
        msg = short_error(error)
        self.ex._log(
            "partition_retry",
            f"partition {part.pid} failed (attempt {attempt + 1}); retrying in {delay:.1f}s: {msg}",
            partition_id=part.pid,
            retry_count=attempt + 1,
            retry_delay_s=delay,
            error_message=msg,
        )
        count = (self.ex.status.data.get("retries") or {}).get("count") or 0
        self.ex.status.update(retries={"count": count + 1, "partition": part.pid, "message": msg})

    def on_failed(self, part: Any, attempt: int, error: BaseException) -> None:
        msg = short_error(error)
        self.ex._log(
            "partition_failed",
            f"partition {part.pid} failed after {attempt + 1} attempts: {msg}",
            partition_id=part.pid,
            retry_count=attempt,
            error_message=msg,
            error_type=type(error).__name__,
        )
        self.ex.progress.note(f"partition {part.pid} failed: {msg}")
        self.ex._note_failure(part.pid, error, self._settled())

    def on_done(self, part: Any, result: PartitionResult, attempt: int) -> None:
        if result.s3_retries is not None:
            process, count = result.s3_retries
            reports = self.ex._s3_retries
            reports[process] = max(reports.get(process, 0), count)
        if result.resumed_from is None:  # read from its source: its rejects file holds these
            self.ex._rejects[part.pid] = result.rejected
        spent = self.ex._spent[part.pid] = add_resources(
            self.ex._spent.get(part.pid, {}), result.resources()
        )
        if self.final:
            self.ex._log(
                "partition_complete",
                f"partition {part.pid}: {result.rows_in} -> {result.rows_out} rows",
                partition_id=part.pid,
                input_rows=result.rows_in,
                output_rows=result.rows_out,
                retry_count=attempt,
                **spent,
            )
            self.ex.progress.partition_done(part.pid, result.rows_out)
            self.committed += 1
            self.ex._partition_finished(
                part, result.rows_out, self._settled(), self.ex._point(self.target, self.committed)
            )
        else:
            self.committed += 1
            now = now_rfc3339()
            self.ex.status.update(
                last_checkpoint_at=now,
                partitions=self._settled(),
                checkpoint=self.ex._point(self.target, self.committed, now),
            )

    def on_fatal(self, part: Any, error: BaseException) -> None:
        # Best effort: on a full disk these writes fail too, and ``error`` must still end the job.
        if isinstance(error, (SourceChanged, MalformedRecordError, NoSpace)):
            best_effort(
                lambda: self.ex._log(
                    "partition_failed",
                    str(error),
                    partition_id=part.pid,
                    error_message=str(error),
                    error_type=type(error).__name__,
                )
            )
        best_effort(lambda: self.ex._note_failure(part.pid, error))


#: Partitions whose commit logs the driver reads at once, with its work dir in a bucket.
SCAN_THREADS = 16


class Executor:
    """Runs one recipe as a partitioned, checkpointed, resumable job."""

    def __init__(
        self,
        recipe: Recipe,
        work_dir: str | Path | None = None,
        job_id: str | None = None,
        restart: bool = False,
        progress: Progress | None = None,
        ray_address: str | None = None,
        engine: str | None = None,
        wait_for_lock_s: float = 0.0,
        grace_period_s: float = 20.0,
        handle_signals: bool = False,
        run_id: str | None = None,
    ):
        self.recipe = recipe
        configure_s3(recipe.s3)  # this process reads and exports s3:// paths as the recipe says
        self.work = WorkDir(resolve_work_dir(recipe, work_dir))
        self.requested_job_id = job_id or recipe.job_id
        self.restart = restart
        self.progress = progress or NoProgress()
        self.ray_address = ray_address or recipe.ray_address
        self.engine = engine or recipe.engine or default_engine()
        self._pool: LocalPool | None = None
        self.wait_for_lock_s = wait_for_lock_s
        self.grace_period_s = grace_period_s
        self.handle_signals = handle_signals
        self.job_id = self.requested_job_id or ""
        self.run_id = run_id or new_run_id()
        self.stop = StopToken()
        self.events: EventLogger | None = None
        self.fence: Fence | None = None
        self.status: StatusWriter = StatusWriter(self.work.uri, "", self.run_id, None)
        self._cpus = 1
        self._local: LocalEngine | None = None
        self._first_error: dict[str, Any] | None = None
        self._done: set[int] = set()
        self._run_begun = False
        self._started: float | None = None
        #: Each partition's resource fields in this run, over its stages.
        self._spent: dict[int, dict[str, float]] = {}
        #: Each task process's S3 retries as last reported (``host:pid`` -> count).
        self._s3_retries: dict[str, int] = {}
        #: Malformed records set aside per partition, as its task reported on reading its
        #: source in this run (the others are counted from their rejects files).
        self._rejects: dict[int, int] = {}

    # ------------------------------------------------------------------ signals
    def request_stop(self, signum: int | None = None) -> None:
        """Stop scheduling; in-flight tasks end after their checkpoint (``--grace-period``)."""
        first = not self.stop.requested
        self.stop.request(self.grace_period_s, signum)
        if not first:
            return
        with contextlib.suppress(OSError, RunnerError):
            self.work.blobs.write(self.work.stop_key(self.run_id), b"")
        if self.handle_signals:
            timer = threading.Timer(self.grace_period_s + 1.0, self._grace_expired)
            timer.daemon = True
            timer.start()

    def _grace_expired(self) -> None:
        """The grace period ran out: record the interruption (if this run owns the work dir's
        status yet) and exit at once."""
        try:
            if self.status.data["job_id"]:
                self.status.finish(
                    "interrupted",
                    {"op": None, "partition": None, "message": "grace period ran out"},
                )
        finally:
            os._exit(ExitCode.INTERRUPTED)

    def _install_signal_handlers(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: Any) -> None:
            if self.stop.requested:
                os._exit(SIGNAL_EXIT_BASE + signum)  # a second signal: exit at once
            self.request_stop(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def _check_stop(self) -> None:
        if self.stop.requested:
            raise Interrupted("stopped by a signal before the next stage")

    # ------------------------------------------------------------------ the job
    def run(self) -> JobResult:
        """Run (or resume) the job to the end.

        Raises before any work: WorkDirLocked, RecipeError (e.g. an export that would destroy
        files), ResumeRefused. Every later outcome is a JobResult (see ``exit_code``).
        """
        self._run_begun = True
        self._install_signal_handlers()
        lock = WorkDirLock(self.work.uri, WorkDirLock.holder_for(self.run_id, now_rfc3339()))
        try:
            lock.acquire(self.wait_for_lock_s, cancelled=lambda: self.stop.requested)
        except BaseException:
            self._run_begun = False  # this run never began: the work dir's status is another's
            raise
        try:
            return self._run_locked()
        finally:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            best_effort(lambda: self.work.blobs.delete(self.work.stop_key(self.run_id)))
            lock.release()

    def _run_locked(self) -> JobResult:
        t0 = self._started = time.time()
        for stale in self.work.stop_keys():  # left by a run the grace period cut short
            if stale != self.work.stop_key(self.run_id):
                self.work.blobs.delete(stale)
        self.fence = take_claim(self.work.uri, self.run_id)
        check_export_target(self.recipe.export_path)
        claim = claim_work_dir(self.work, self.recipe, self.requested_job_id, self.restart)
        if self.restart:
            remove_export(self.recipe.export_path)
        self.job_id = claim.job_id
        self.resuming = claim.resuming
        self.status = StatusWriter(
            self.work.uri, self.job_id, self.run_id, self.recipe.export_path, self.fence
        )
        self.status.write()
        self.events = event_logger(self.work, self.job_id, self.recipe.event_logging)
        result = JobResult(
            "failed", self.job_id, self.work.uri, self.recipe.export_path, run_id=self.run_id
        )
        try:
            if claim.recovered:
                self.progress.note(claim.recovered)
                self._log("checkpoint_invalid", claim.recovered, error_message=claim.recovered)
            for notice in self.recipe.notices:
                self.progress.note(f"note: {notice}")
            self._log(
                "job_restart" if claim.resuming else "job_start",
                f"job {self.job_id} {'resumes' if claim.resuming else 'starts'} (run {self.run_id})",
                config=self.recipe.result_defining(),
                run_id=self.run_id,
                executor_type=self.recipe.executor_type,
                notices=list(self.recipe.notices),
            )
            self._run(result)
        except Interrupted as exc:
            result.status = "interrupted"
            result.error = str(exc)
            if self.stop.deadline is not None and time.monotonic() >= self.stop.deadline:
                result.error = (
                    "the grace period ran out; the tasks still running were cancelled "
                    "(their committed checkpoints are kept)"
                )
            sig = signal.Signals(self.stop.signum).name if self.stop.signum else "a signal"
            best_effort(
                lambda: self._log(
                    "job_interrupted",
                    f"job {self.job_id} stopped on {sig}; resumable",
                    run_id=self.run_id,
                    job_duration=time.time() - t0,
                )
            )
        except Exception as exc:
            result.status = "failed"
            result.code = _exit_code_for(exc)
            result.error = (
                str(exc) if isinstance(exc, RunnerError) else f"{type(exc).__name__}: {exc}"
            )
            stack, message, kind = traceback.format_exc(), str(exc), type(exc).__name__
            best_effort(
                lambda: self._log(
                    "job_failed",
                    result.error,
                    error_message=message,
                    error_type=kind,
                    stack_trace=stack,
                    failure_time=time.time(),
                    job_duration=time.time() - t0,
                )
            )
        finally:
            result.duration = time.time() - t0
            release_held()  # checked final checkpoints an export that never came would read
            result.rejected = self._count_rejects()
            error = None
            if result.status == "failed":
                error = self._first_error or {"op": None, "partition": None, "message": ""}
                error = {**error, "message": result.error or error["message"]}
            elif result.status == "interrupted" and "grace period" in (result.error or ""):
                error = {"op": None, "partition": None, "message": result.error}
            self._record_end(result, error)
            self.progress.close()
            self.events.close()
        return result

    def _record_end(self, result: JobResult, error: dict[str, Any] | None) -> None:
        """Write the run's end to status.json and result.json, best effort on a full disk.

        The exit code reports what happened to the data; when the disk has no room left even
        for these small files, they keep the previous state (``status`` then shows the run as
        interrupted, its runner being gone) and stderr says so. A run superseded by a newer
        one (a newer claim) writes neither: they are the newer run's.
        """
        self.status.data["samples"]["rejected"] = result.rejected
        self.status.data["partitions"]["running"] = 0
        if self.status.superseded():
            return
        missed = [
            exc
            for exc in (
                best_effort(lambda: self.status.finish(result.status, error)),
                best_effort(lambda: self.work.blobs.write_json(WorkDir.RESULT, result.to_dict())),
            )
            if exc is not None
        ]
        if missed:
            self.progress.note(f"warning: the run's end could not be recorded: {missed[0]}")

    def _connect(self) -> Any:
        from dj_runner.engine.ray_env import connect
        from dj_runner.io.sources import list_sources

        # A cluster is named by an address (host:port, ray://host:port) or by auto (Ray's
        # address file decides); none, "" and local name an embedded Ray only.
        ray_named = resolve_target(self.ray_address).mode != "embedded"
        if choose_engine(self.engine, ray_named, 0) == "local":  # the input's size may decide
            size = sum(s.size for s in list_sources(self.recipe.dataset_path))
            if choose_engine(self.engine, ray_named, size) == "local":
                local = LocalEngine(self.recipe.np or machine_cpus(), size)
                where = (
                    f"on {local.cpus} local worker processes"
                    if local.workers_likely
                    else f"in this process ({local.cpus} CPUs)"  # whatever the plan
                )
                if local.workers_likely:
                    # It imports and warms while this process plans.
                    start_fork_server(self._server_env())
                self._log(
                    "engine_selected",
                    f"runs {where}, no Ray (engine {self.engine}, input {size:,} bytes)",
                    engine="local",
                    cpus=local.cpus,
                )
                return local

        try:
            conn = connect(self.ray_address, self.recipe.np, events=self.events)
        except RunnerError:
            raise
        except (ValueError, ConnectionError, TimeoutError) as exc:
            raise InvalidInput(
                f"cannot use Ray at {self.ray_address or os.environ.get('RAY_ADDRESS') or 'embedded'}: "
                f"{short_error(exc)}"
            ) from None
        self._install_signal_handlers()  # Ray's init installs its own SIGTERM handler
        return conn

    def _run(self, result: JobResult) -> None:
        conn = self._connect()
        self.status.update(engine_ready_at=now_rfc3339())  # Ray started or joined, or skipped
        self._cpus = conn.cpus
        self._local = conn if isinstance(conn, LocalEngine) else None
        self._check_stop()
        plan, plan_id = load_or_build_plan(
            self.work, self.recipe, conn.cpus, self._log, self.progress.note
        )
        assert self.fence is not None
        self.fence = self.fence.with_plan(plan_id)
        n_ops = len(self.recipe.process)
        final = CheckpointKey(n_ops)
        result.total_partitions = len(plan.partitions)
        result.rows_in = plan.total_rows
        self._parts = {p.pid: p for p in plan.partitions}
        stores = {p.pid: self._store(p.pid) for p in plan.partitions}
        newest = self._each(lambda pid: stores[pid].newest_key(), list(stores))
        self._done = {pid for pid, k in newest.items() if k is not None and k >= final}
        # Partitions with a checkpoint are not read from the source again: check their input.
        checked = sorted(pid for pid, k in newest.items() if k is not None)
        if checked:
            self.progress.note(f"verifying the input of {len(checked)} checkpointed partitions")
            verify_content(plan, checked)
        rows_out = 0
        for pid in self._done:
            commit = stores[pid].latest_commit(final)
            rows_out += commit.rows if commit else 0
        reached = [k for k in newest.values() if k is not None]
        point = None
        if reached:
            top = max(reached)
            point = self._point(top, sum(1 for k in reached if k >= top))
        resumed = None
        if self.resuming:
            resumed = {
                "partitions_done": len(self._done),
                "checkpoints": sum(1 for k in newest.values() if k is not None),
            }
        self.status.update(
            partitions={"total": len(plan.partitions), "done": len(self._done)},
            samples={
                "in": sum(self._parts[p].rows for p in self._done),
                "out": rows_out,
                "rejected": sum(self._rejected(p) for p in self._done),
            },
            resumed=resumed,
            checkpoint=point,
        )
        self.progress.start(len(plan.partitions), plan.total_rows, len(self._done))
        verified = (
            f"; the input of {len(checked)} checkpointed partitions matches the plan's "
            "content hashes"
            if checked
            else ""
        )
        self._log(
            "processing_start",
            f"{len(plan.partitions)} partitions on {conn.address} ({conn.cpus} CPUs){verified}",
            total_partitions=len(plan.partitions),
            metadata={"input_verified_partitions": len(checked)},
        )

        barriers = [i for i, s in enumerate(self.recipe.process) if s.op.is_global]
        targets = [CheckpointKey(g, hashed=True) for g in barriers] + [final]
        failed: dict[int, str] = {}
        for target in targets:
            self._check_stop()
            keys = self._each(lambda pid: self._store(pid).newest_key(), list(self._parts))
            pending = [p for p in plan.partitions if (keys[p.pid] or CheckpointKey(-1)) < target]
            if target.hashed and read_decision(self.work, target.step, self.fence) is not None:
                pending = []  # decided in an earlier run; later stages apply it
            label = f"ops up to #{target.step}" + (" (hashing)" if target.hashed else "")
            self.progress.stage(label)
            idx = target.step if target.hashed else n_ops - 1
            self.status.update(
                stage={
                    "index": idx,
                    "op": self.recipe.process[idx].name,
                    "global": target.hashed,
                }
            )
            outcome = self._run_stage(plan, pending, target)
            failed.update(outcome.failed)
            if target.hashed:
                if failed:
                    raise RunnerError(
                        f"global op '{self.recipe.process[target.step].name}' needs every "
                        f"partition, and partitions {sorted(failed)} failed; rerun to retry them"
                    )
                self._decide_global(plan, target.step)

        result.failed_partitions = sorted(failed)
        self._log(
            "processing_complete",
            f"{len(plan.partitions) - len(failed)} of {len(plan.partitions)} partitions done",
            total_partitions=len(plan.partitions),
            successful_partitions=len(plan.partitions) - len(failed),
            failed_partitions=len(failed),
        )
        if len(failed) > self.recipe.max_failed_partitions:
            raise RunnerError(
                f"{len(failed)} partitions failed ({sorted(failed)}), more than "
                f"max_failed_partitions={self.recipe.max_failed_partitions}; "
                f"first error: {failed[min(failed)]}. Rerun the same command to retry them"
            )
        verified = self._repair_final(plan, exclude=set(failed), failed=failed)
        if len(failed) > self.recipe.max_failed_partitions:
            raise RunnerError(f"partitions {sorted(failed)} failed while being recomputed")
        self._check_stop()
        self.status.update(stage={"index": n_ops, "op": "export", "global": False})
        result.rows_out = self._export(plan, exclude=set(failed), verified=verified)
        self.status.update(samples={"out": result.rows_out})
        result.status = "partially_succeeded" if failed else "succeeded"
        self._retain(succeeded=not failed)
        spent: dict[str, float] = {}
        for one in self._spent.values():
            spent = add_resources(spent, one)
        self._log(
            "job_complete",
            f"job {self.job_id} {result.status}: {result.rows_in} -> {result.rows_out} samples",
            status=result.status,
            total_partitions=len(plan.partitions),
            successful_partitions=len(plan.partitions) - len(failed),
            failed_partitions=len(failed),
            input_rows=result.rows_in,
            output_rows=result.rows_out,
            completion_time=time.time(),
            output_path=self.recipe.export_path,
            # The work dir's S3 requests retried after transient errors: the driver's and
            # those each task process reported with its last finished task.
            s3_request_retries=None
            if self.work.is_local
            else total_retries(self._s3_retries, s3_retry_report()),
            work_dir_bytes=self.work.size(),
            **spent,
        )

    def _retain(self, succeeded: bool) -> None:
        """Remove what the recipe's ``retention`` does not keep (``retention.py``): the
        export is written, so a succeeded job's checkpoints may go."""
        self._check_claim()  # a superseded run deletes nothing either
        entries = unneeded(
            self.work, self.recipe.retention, succeeded, self._started, leftovers=False
        )
        if entries:
            freed = self.work.remove(e.path for e in entries)
            self._log(
                "cleanup",
                f"retention removed {len(entries)} entries: {freed:,} bytes freed",
                entries_removed=len(entries),
                bytes_freed=freed,
                removed=[e.path for e in entries[:100]],
            )

    def _log(self, event_type: str, message: str = "", **fields: Any) -> None:
        if self.events is not None:
            self.events.log(event_type, message, **fields)

    # ------------------------------------------------------------------ progress state
    def _point(
        self, key: CheckpointKey, committed: int, at: str | None = None
    ) -> contract.Checkpoint:
        """status.json's ``checkpoint``: ``committed`` partitions hold ``key``'s checkpoint."""
        ops = key.step
        return {
            "partitions_committed": committed,
            "partitions_total": len(self._parts),
            "ops_done": ops,
            "op": self.recipe.process[ops - 1].name if ops else None,
            "at": at,
        }

    def _partition_finished(
        self,
        part: Any,
        rows_out: int,
        running: dict[str, int],
        point: contract.Checkpoint | None = None,
    ) -> None:
        if part.pid in self._done:
            self.status.update(partitions=running)
            return
        self._done.add(part.pid)
        st = self.status.data
        now = now_rfc3339()
        if point is not None:
            point = {**point, "at": now}
        self.status.update(
            partitions={**running, "done": st["partitions"]["done"] + 1},
            samples={
                "in": st["samples"]["in"] + part.rows,
                "out": st["samples"]["out"] + rows_out,
                "rejected": st["samples"]["rejected"] + self._rejected(part.pid),
            },
            last_checkpoint_at=now,
            **({"checkpoint": point} if point is not None else {}),
        )

    def _note_failure(
        self, pid: int, error: BaseException, running: dict[str, int] | None = None
    ) -> None:
        if self._first_error is None:
            self._first_error = {
                "op": error.op_name if isinstance(error, OpError) else None,
                "partition": pid,
                "message": str(error),
            }
        self.status.update(
            partitions={**(running or {}), "failed": self.status.data["partitions"]["failed"] + 1},
            error=self._first_error,
        )

    def _count_rejects(self) -> int:
        parts = getattr(self, "_parts", {})
        return sum(self._rejected(pid) for pid in parts)

    def _rejected(self, pid: int) -> int:
        """Partition ``pid``'s malformed records: as its task reported them, else as its
        rejects file holds them (a request in a bucket)."""
        known = self._rejects.get(pid)
        return known if known is not None else count_rejects(self.work, pid)

    def _each(self, fn: Callable[[int], Any], pids: list[int]) -> dict[int, Any]:
        """``fn(pid)`` for every partition: on a local work dir one after the other; in a
        bucket ``SCAN_THREADS`` at a time (each is a listing and reads: request latency,
        which a resumed job's first stage would otherwise pay once per partition in turn)."""
        if self.work.is_local or len(pids) < 2:
            return {pid: fn(pid) for pid in pids}
        with cf.ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="dj-runner-scan") as pool:
            return dict(zip(pids, pool.map(fn, pids), strict=True))

    def _store(self, pid: int) -> CheckpointDir:
        """Partition ``pid``'s checkpoints, written under this run's claim."""
        return partition_store(self.work, pid, self.recipe.checkpoint, self.fence)

    def _server_env(self) -> dict[str, str]:
        """What the local engine's fork server warms once for every worker: the recipe's ops,
        and an S3 client when the work dir is in a bucket."""
        return {
            **ops_warm_env(spec.name for spec in self.recipe.process),
            **({} if self.work.is_local else warm_env()),
        }

    # ------------------------------------------------------------------ scheduling
    def _run_stage(self, plan: Plan, parts: list[Any], target: CheckpointKey) -> StageOutcome:
        if not parts:
            return StageOutcome()
        if self._local is not None and in_place_target(self.recipe, target) is not None:
            parts = self._decide_in_place(parts, target)
            if not parts:
                return StageOutcome()
        stage = StageTask(self.work.uri, self.recipe, plan.sources, target, self.job_id, self.fence)
        backend: Any
        if self._local is not None:
            if self._pool is None:
                partitions = len(plan.partitions)
                self._pool = LocalPool(
                    self._local.workers(partitions),
                    server_env=self._server_env(),
                    inline=self._local.inline(partitions),
                )
            backend = LocalTaskBackend(self._pool, stage)
        else:
            backend = RayTaskBackend(stage)
        capacity = max(2, 2 * self._cpus)
        final = target == CheckpointKey(len(self.recipe.process))
        scheduler = PartitionScheduler(
            backend,
            RetryPolicy(self.recipe.max_retries, self.recipe.retry_base_delay_s),
            capacity=capacity,
            fatal=FATAL_ERRORS,
            listener=_StageListener(self, target, final, len(parts), capacity),
            stop=self.stop,
            reached=lambda res: res.final_key == target,
        )
        self.status.update(partitions={"running": min(len(parts), scheduler.capacity)})
        outcome = scheduler.run(parts)
        self.status.update(partitions={"running": 0})
        if outcome.interrupted:
            raise Interrupted("stopped by a signal; in-flight checkpoints were committed")
        return outcome

    def _decide_in_place(self, parts: list[Any], target: CheckpointKey) -> list[Any]:
        """The last op's decision applied, on threads of the driver, to each partition whose
        newest checkpoint is its hashed one (``decision_in_place``: a selection file read and
        written, no text). Returns the partitions it did not bring to ``target``: any that
        stands elsewhere, or whose attempt failed in any way, is left to a task, which tries
        the same and else runs the ops in a worker, with its retries."""
        step = in_place_target(self.recipe, target)
        assert step is not None
        decision = read_decision(self.work, step, self.fence)
        events = self.events
        if decision is None or events is None:
            return parts

        def attempt(part: Any) -> PartitionResult | None:
            try:
                return decision_in_place(
                    self.work,
                    self.recipe,
                    part,
                    target,
                    self._store(part.pid),
                    events,
                    self.fence,
                    0,
                    decision,
                )
            except Exception:  # the task retries it, and reports what keeps failing
                return None

        capacity = max(2, 2 * self._cpus)
        listener = _StageListener(self, target, True, len(parts), capacity)
        left = []
        with cf.ThreadPoolExecutor(capacity, thread_name_prefix="dj-runner-decide") as pool:
            for part, result in zip(parts, pool.map(attempt, parts), strict=True):
                if result is None:
                    left.append(part)
                else:
                    listener.on_done(part, result, 0)
        return left

    # ------------------------------------------------------------------ global ops
    def _decide_global(self, plan: Plan, op_idx: int) -> None:
        if read_decision(self.work, op_idx, self.fence) is not None:
            return
        name = self.recipe.process[op_idx].name
        self._log(
            "global_op_start",
            f"{name}: deciding across {len(plan.partitions)} partitions",
            operation_name=name,
            operation_idx=op_idx,
        )
        t0 = time.perf_counter()
        key = CheckpointKey(op_idx, hashed=True)
        op = self.recipe.process[op_idx].op
        columns = list(op.signature_columns)  # type: ignore[attr-defined]
        for _ in range(3):
            broken = []

            def signatures(broken: list[Any] = broken) -> Iterator[tuple[int, pa.Table]]:
                # One partition's signature columns at a time, in plan order.
                for part in plan.partitions:
                    store = self._store(part.pid)
                    commit = store.latest_commit(key)
                    try:
                        if commit is None:
                            raise InvalidCheckpoint("no hashed checkpoint")
                        table = store.load(commit, columns)
                    except InvalidCheckpoint:
                        broken.append(part)
                        continue
                    if not broken:  # past a broken one, the decision is redone anyway
                        yield part.pid, table

            masks = op.decide(signatures())  # type: ignore[attr-defined]
            if not broken:
                break
            outcome = self._run_stage(plan, broken, key)
            if outcome.failed:
                raise RunnerError(
                    f"could not rebuild hashes for partitions {sorted(outcome.failed)}"
                )
        else:
            raise RunnerError(f"{name}: hashed checkpoints keep failing verification")
        save_decision(self.work, op_idx, name, GlobalDecision(masks), self.fence)
        n_removed = removed(masks)
        self._log(
            "global_op_complete",
            f"{name}: {n_removed} duplicates removed",
            operation_name=name,
            operation_idx=op_idx,
            duration=time.perf_counter() - t0,
            metadata={"removed": n_removed},
        )

    # ------------------------------------------------------------------ export
    def _repair_final(
        self, plan: Plan, exclude: set[int], failed: dict[int, str]
    ) -> dict[int, Commit]:
        """Verify every final checkpoint before export; recompute the ones that fail.
        Returns the final commits that verified (the recomputed ones not among them)."""

        def invalid(pid: int, why: str) -> None:
            self._log(
                "checkpoint_invalid",
                f"partition {pid}: {why}; recomputing",
                partition_id=pid,
                error_message=why,
            )

        broken, verified = broken_finals(
            self.work, self.recipe, plan, exclude, invalid, self.fence, self._each
        )
        if broken:
            self.progress.stage(f"recomputing {len(broken)} partitions")
            failed.update(
                self._run_stage(plan, broken, CheckpointKey(len(self.recipe.process))).failed
            )
        return verified

    def _check_claim(self) -> None:
        """Raise Superseded if a newer run has claimed the work dir: this run writes nothing
        more (a runner cut off with its node, or frozen, that runs on)."""
        if self.fence is not None:
            self.fence.check_current()

    def _export(self, plan: Plan, exclude: set[int], verified: dict[int, Commit]) -> int:
        # Every final checkpoint may be committed (by a newer run, too) while this run was
        # superseded: the export is the newer run's to write.
        self._check_claim()
        self.progress.stage("exporting")
        t0 = time.perf_counter()
        rows = export_finals(self.work, self.recipe, plan, exclude, self.fence, verified)
        self._log(
            "export_complete",
            f"wrote {rows} samples to {self.recipe.export_path}",
            output_path=self.recipe.export_path,
            output_rows=rows,
            duration=time.perf_counter() - t0,
        )
        return rows

    # ------------------------------------------------------------------ event API
    def get_events(self, **filters: Any) -> list[Event]:
        """Events of this work dir; filters: event_type, partition_id, operation_name, since.

        An ``event_type`` that is no event type raises ``ValueError`` naming the valid ones.
        """
        return read_events(self.work.events_uri, **filters)

    def monitor_events(self, **kwargs: Any) -> Iterator[Event]:
        """Follow the event log live (works from another process too).

        Ends when the job ends, after yielding every event written: once no runner holds the
        work dir and ``status.json`` records the end of the run (this executor's own run,
        once ``run`` has begun). Also ends at ``until``, ``timeout`` or ``stop``, as
        ``follow_events`` does; filters as ``get_events``.
        """
        check_event_types(kwargs.get("event_type"))  # at the call, not at the first next()
        kwargs.setdefault("ended", self._job_ended)
        return follow_events(self.work.events_uri, **kwargs)

    def _job_ended(self) -> bool:
        """No runner holds the work dir and its status is the end of a run (of this run,
        once this executor has begun one)."""
        if is_locked(self.work.uri):
            return False
        st = read_status(self.work.uri)
        if st is None:
            return False  # no run has begun yet
        return not self._run_begun or st.get("run_id") == self.run_id

    def get_performance_summary(self) -> dict[str, Any]:
        return performance_summary(self.get_events())

    def generate_status_report(self) -> str:
        return status_report(self.work.uri)

    def status_dict(self) -> dict[str, Any]:
        return status(self.work.uri)


def best_effort(write: Callable[[], None]) -> NoSpace | None:
    """Run ``write``; on a full disk return its ``NoSpace`` instead of raising.

    For the writes of an error path (the event log, status.json, result.json): they must not
    replace the error being reported by one about the disk it already names.
    """
    try:
        write()
    except NoSpace as exc:
        return exc
    return None


def _exit_code_for(exc: BaseException) -> int:
    if is_no_space(exc):  # NoSpace, or an ENOSPC/EDQUOT OSError no write path named
        return ExitCode.NO_SPACE
    if isinstance(exc, ResumeRefused):
        return ExitCode.REFUSED
    if isinstance(exc, (RecipeError, InvalidInput, InputError, RayAddressError)):
        return ExitCode.USAGE
    if isinstance(exc, Superseded):
        return ExitCode.LOCKED
    if isinstance(exc, RayUnavailable):
        return ExitCode.RAY_UNAVAILABLE
    if isinstance(exc, (RunnerError, OSError)):
        return ExitCode.FAILED  # OSError: the disk, not the runner (a full or read-only volume)
    return ExitCode.INTERNAL
