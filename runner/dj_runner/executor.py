"""The job driver: plan, schedule partitions on Ray with retries, cross global ops, export.

``Executor(recipe).run()`` is the whole job. It is resumable: running it again on the same
work dir continues from each partition's newest valid checkpoint and never recomputes a
finished partition. Its event API (``get_events``, ``monitor_events``,
``get_performance_summary``, ``generate_status_report``) reads the work dir's event log.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from dj_runner import __version__
from dj_runner.atomic import write_json_atomic
from dj_runner.checkpoint import CheckpointKey, InvalidCheckpoint
from dj_runner.errors import MalformedRecordError, ResumeRefused, RunnerError
from dj_runner.events import Event, EventLogger, follow_events, read_events
from dj_runner.export import write_export
from dj_runner.partition_task import PartitionResult, SourceChanged, run_partition
from dj_runner.planner import Plan, build_plan
from dj_runner.progress import NoProgress, Progress
from dj_runner.recipe import Recipe
from dj_runner.report import performance_summary, status, status_report
from dj_runner.sources import SourceFile, list_sources
from dj_runner.workdir import GlobalDecision, WorkDir

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_REFUSED = 4

FATAL_ERRORS = (SourceChanged, MalformedRecordError)


@dataclass
class JobResult:
    status: str  # succeeded | partially_succeeded | failed
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

    @property
    def exit_code(self) -> int:
        return {"succeeded": EXIT_OK, "partially_succeeded": EXIT_PARTIAL}.get(
            self.status, EXIT_FAILED
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_work_dir(recipe: Recipe) -> Path:
    return Path(recipe.export_path).parent / f"{recipe.project_name}-work"


def _event_logger(work: WorkDir, job_id: str, ev: Any) -> EventLogger:
    return EventLogger(
        work.events_dir, job_id, ev.max_log_size_mb, ev.backup_count, ev.enabled, ev.log_level
    )


def _partition_task(
    work_root: str,
    recipe: Recipe,
    part: Any,
    sources: tuple[SourceFile, ...],
    target: CheckpointKey,
    attempt: int,
    job_id: str,
) -> PartitionResult:
    work = WorkDir(work_root)
    ev = recipe.event_logging
    with _event_logger(work, job_id, ev) as log:
        return run_partition(work, recipe, part, sources, target, attempt, log)


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
    ):
        self.recipe = recipe
        self.work = WorkDir(work_dir or recipe.work_dir or default_work_dir(recipe))
        self.requested_job_id = job_id or recipe.job_id
        self.restart = restart
        self.progress = progress or NoProgress()
        self.ray_address = ray_address or recipe.ray_address
        self.job_id = self.requested_job_id or ""
        self.events: EventLogger | None = None

    # ------------------------------------------------------------------ resume checks
    def _claim_work_dir(self) -> bool:
        """Write or check the manifest. Returns True when this run resumes an earlier one."""
        manifest = self.work.read_manifest()
        if manifest is not None and self.restart:
            self.work.wipe()
            export = Path(self.recipe.export_path)
            if export.is_dir():
                shutil.rmtree(export)
            else:
                export.unlink(missing_ok=True)
            manifest = None
        fp = self.recipe.fingerprint()
        if manifest is not None:
            if manifest["fingerprint"] != fp:
                raise ResumeRefused(
                    f"the recipe changed since this work dir was started "
                    f"({_describe_change(manifest['result_defining'], self.recipe.result_defining())}); "
                    f"resuming would mix results. Use --restart to start the job over, or "
                    f"another --work-dir"
                )
            if self.requested_job_id and self.requested_job_id != manifest["job_id"]:
                raise ResumeRefused(
                    f"work dir {self.work.root} belongs to job '{manifest['job_id']}', "
                    f"not '{self.requested_job_id}'; use --restart or another --work-dir"
                )
            self.job_id = manifest["job_id"]
            return True
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.job_id = self.requested_job_id or f"{self.recipe.project_name}-{stamp}"
        self.work.write_manifest(
            {
                "job_id": self.job_id,
                "fingerprint": fp,
                "result_defining": self.recipe.result_defining(),
                "created_at": time.time(),
                "runner_version": __version__,
            }
        )
        return False

    def _load_or_build_plan(self, cpus: int) -> Plan:
        log = self._log
        if self.work.plan_path.exists():
            plan = Plan.from_dict(json.loads(self.work.plan_path.read_text()))
            current = {s.path: s for s in list_sources(self.recipe.dataset_path)}
            for src in plan.sources:
                now = current.get(src.path)
                if now is None or (now.size, now.mtime_ns) != (src.size, src.mtime_ns):
                    raise ResumeRefused(
                        f"input file {src.path} changed or vanished since the plan was made; "
                        "restore it, or use --restart to start over"
                    )
            log(
                "partition_plan_loaded",
                f"reusing the plan: {len(plan.partitions)} partitions",
                total_partitions=len(plan.partitions),
            )
            return plan
        plan = build_plan(list_sources(self.recipe.dataset_path), self.recipe.partition, cpus)
        plan.save(self.work.plan_path)
        log(
            "partition_plan_saved",
            f"{len(plan.partitions)} partitions of at most {plan.rows_bound} samples / "
            f"{plan.mb_bound} MB ({plan.mode})",
            total_partitions=len(plan.partitions),
            metadata={
                "rows_bound": plan.rows_bound,
                "mb_bound": plan.mb_bound,
                "total_rows": plan.total_rows,
            },
        )
        return plan

    def _log(self, event_type: str, message: str = "", **fields: Any) -> None:
        if self.events is not None:
            self.events.log(event_type, message, **fields)

    # ------------------------------------------------------------------ the job
    def run(self) -> JobResult:
        """Run (or resume) the job to the end. Raises RecipeError/ResumeRefused before work."""
        t0 = time.time()
        resuming = self._claim_work_dir()
        ev = self.recipe.event_logging
        self.events = _event_logger(self.work, self.job_id, ev)
        result = JobResult("failed", self.job_id, str(self.work.root), self.recipe.export_path)
        try:
            self._log(
                "job_restart" if resuming else "job_start",
                f"job {self.job_id} {'resumes' if resuming else 'starts'}",
                config=self.recipe.result_defining(),
            )
            self._run(result)
        except Exception as exc:
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}"
            self._log(
                "job_failed",
                result.error,
                error_message=str(exc),
                error_type=type(exc).__name__,
                stack_trace=traceback.format_exc(),
                failure_time=time.time(),
                job_duration=time.time() - t0,
            )
            if isinstance(exc, ResumeRefused) or not isinstance(exc, RunnerError):
                raise
        finally:
            result.duration = time.time() - t0
            write_json_atomic(self.work.result_path, result.to_dict())
            self.progress.close()
            self.events.close()
        return result

    def _run(self, result: JobResult) -> None:
        from dj_runner.ray_env import connect

        conn = connect(self.ray_address, self.recipe.np)
        plan = self._load_or_build_plan(conn.cpus)
        n_ops = len(self.recipe.process)
        final = CheckpointKey(n_ops)
        result.total_partitions = len(plan.partitions)
        result.rows_in = plan.total_rows
        done_before = sum(
            1
            for p in plan.partitions
            if (self.work.partition_store(p.pid, self.recipe).newest_key() or CheckpointKey(-1))
            >= final
        )
        self.progress.start(len(plan.partitions), plan.total_rows, done_before)
        self._log(
            "processing_start",
            f"{len(plan.partitions)} partitions on {conn.address} ({conn.cpus} CPUs)",
            total_partitions=len(plan.partitions),
        )

        barriers = [i for i, s in enumerate(self.recipe.process) if s.op.is_global]
        targets = [CheckpointKey(g, hashed=True) for g in barriers] + [final]
        outcomes: dict[int, PartitionResult] = {}
        failed: dict[int, str] = {}
        for target in targets:
            pending = [
                p
                for p in plan.partitions
                if (self.work.partition_store(p.pid, self.recipe).newest_key() or CheckpointKey(-1))
                < target
            ]
            if target.hashed and self.work.global_decision(target.step) is not None:
                pending = []  # decided in an earlier run; later stages apply it
            label = f"ops up to #{target.step}" + (" (hashing)" if target.hashed else "")
            self.progress.stage(label)
            outcomes_stage, failed_stage = self._run_stage(plan, pending, target)
            outcomes.update(outcomes_stage)
            failed.update(failed_stage)
            if target.hashed:
                if failed:
                    raise RunnerError(
                        f"global op '{self.recipe.process[target.step].name}' needs every "
                        f"partition, and partitions {sorted(failed)} failed; rerun to retry them"
                    )
                self._decide_global(plan, target.step)

        result.failed_partitions = sorted(failed)
        result.rejected = sum(o.rejected for o in outcomes.values())
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
        self._repair_final(plan, exclude=set(failed), failed=failed)
        if len(failed) > self.recipe.max_failed_partitions:
            raise RunnerError(f"partitions {sorted(failed)} failed while being recomputed")
        result.rows_out = self._export(plan, exclude=set(failed))
        result.status = "partially_succeeded" if failed else "succeeded"
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
        )

    # ------------------------------------------------------------------ scheduling
    def _run_stage(
        self, plan: Plan, parts: list[Any], target: CheckpointKey
    ) -> tuple[dict[int, PartitionResult], dict[int, str]]:
        import ray

        if not parts:
            return {}, {}
        task = ray.remote(num_cpus=1, max_retries=0)(_partition_task)
        recipe_ref = ray.put(self.recipe)
        sources_ref = ray.put(plan.sources)
        max_inflight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        queue: list[tuple[float, Any, int]] = [(0.0, p, 0) for p in parts]
        inflight: dict[Any, tuple[Any, int]] = {}
        done: dict[int, PartitionResult] = {}
        failed: dict[int, str] = {}
        final = target == CheckpointKey(len(self.recipe.process))
        while queue or inflight:
            now = time.monotonic()
            queue.sort(key=lambda q: (q[0], q[1].pid))
            while queue and queue[0][0] <= now and len(inflight) < max_inflight:
                _, part, attempt = queue.pop(0)
                ref = task.remote(
                    str(self.work.root), recipe_ref, part, sources_ref, target, attempt, self.job_id
                )
                inflight[ref] = (part, attempt)
            wait_for = wait_timeout(
                queue[0][0] if queue else None, now, len(inflight), max_inflight
            )
            if not inflight:
                time.sleep(wait_for or 0.0)  # backoff until the next retry is due
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=wait_for)
            for ref in ready:
                part, attempt = inflight.pop(ref)
                try:
                    res: PartitionResult = ray.get(ref)
                except FATAL_ERRORS as exc:
                    for other in inflight:
                        ray.cancel(other, force=True)
                    self._log(
                        "partition_failed",
                        str(exc),
                        partition_id=part.pid,
                        error_message=str(exc),
                        error_type=type(exc).__name__,
                    )
                    raise _unwrap(exc) from None
                except Exception as exc:
                    msg = _short_error(exc)
                    if attempt < self.recipe.max_retries:
                        delay = self.recipe.retry_base_delay_s * (2**attempt)
                        self._log(
                            "partition_retry",
                            f"partition {part.pid} failed (attempt {attempt + 1}); retrying in "
                            f"{delay:.1f}s: {msg}",
                            partition_id=part.pid,
                            retry_count=attempt + 1,
                            retry_delay_s=delay,
                            error_message=msg,
                        )
                        queue.append((time.monotonic() + delay, part, attempt + 1))
                    else:
                        failed[part.pid] = msg
                        self._log(
                            "partition_failed",
                            f"partition {part.pid} failed after {attempt + 1} attempts: {msg}",
                            partition_id=part.pid,
                            retry_count=attempt,
                            error_message=msg,
                            error_type=type(exc).__name__,
                        )
                        self.progress.note(f"partition {part.pid} failed: {msg}")
                    continue
                if res.final_key != target:
                    failed[part.pid] = f"stopped at {res.final_key.label}, expected {target.label}"
                    continue
                done[part.pid] = res
                if final:
                    self._log(
                        "partition_complete",
                        f"partition {part.pid}: {res.rows_in} -> {res.rows_out} rows",
                        partition_id=part.pid,
                        input_rows=res.rows_in,
                        output_rows=res.rows_out,
                        retry_count=attempt,
                    )
                    self.progress.partition_done(part.pid, res.rows_out)
        return done, failed

    # ------------------------------------------------------------------ global ops
    def _decide_global(self, plan: Plan, op_idx: int) -> None:
        if self.work.global_decision(op_idx) is not None:
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
                    store = self.work.partition_store(part.pid, self.recipe)
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
            _, failed = self._run_stage(plan, broken, key)
            if failed:
                raise RunnerError(f"could not rebuild hashes for partitions {sorted(failed)}")
        else:
            raise RunnerError(f"{name}: hashed checkpoints keep failing verification")
        decision = GlobalDecision(masks)
        self.work.save_global_decision(op_idx, name, decision)
        removed = sum(len(m) - m.true_count for m in masks.values())
        self._log(
            "global_op_complete",
            f"{name}: {removed} duplicates removed",
            operation_name=name,
            operation_idx=op_idx,
            duration=time.perf_counter() - t0,
            metadata={"removed": removed},
        )

    # ------------------------------------------------------------------ export
    def _repair_final(self, plan: Plan, exclude: set[int], failed: dict[int, str]) -> None:
        """Verify every final checkpoint before export; recompute the ones that fail."""
        final = CheckpointKey(len(self.recipe.process))
        broken = []
        for part in plan.partitions:
            if part.pid in exclude:
                continue
            store = self.work.partition_store(part.pid, self.recipe)
            commit = store.latest_commit(final)
            try:
                if commit is None:
                    raise InvalidCheckpoint("no final checkpoint")
                store.verify(commit)
            except InvalidCheckpoint as exc:
                self._log(
                    "checkpoint_invalid",
                    f"partition {part.pid}: {exc}; recomputing",
                    partition_id=part.pid,
                    error_message=str(exc),
                )
                if commit is not None:
                    (store.dir / commit.file).unlink(missing_ok=True)
                broken.append(part)
        if broken:
            self.progress.stage(f"recomputing {len(broken)} partitions")
            _, again = self._run_stage(plan, broken, final)
            failed.update(again)

    def _export(self, plan: Plan, exclude: set[int]) -> int:
        final = CheckpointKey(len(self.recipe.process))
        stores = [
            self.work.partition_store(p.pid, self.recipe)
            for p in plan.partitions
            if p.pid not in exclude
        ]
        commits = [s.latest_commit(final) for s in stores]
        schemas = []
        for store, commit in zip(stores, commits, strict=True):
            assert commit is not None
            schemas.append(store.schema(commit))

        def partitions() -> Iterator[Iterator[pa.Table]]:
            for store, commit in zip(stores, commits, strict=True):
                # _repair_final verified every final checkpoint just before (or a task
                # committed it since): no second checksum pass over the data.
                yield store.iter_slices(commit, verified=True)

        self.progress.stage("exporting")
        t0 = time.perf_counter()
        rows = write_export(
            self.recipe.export_path, partitions, schemas, self.recipe.keep_stats_in_res_ds
        )
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
        """Events of this work dir; filters: event_type, partition_id, operation_name, since."""
        return read_events(self.work.events_dir, **filters)

    def monitor_events(self, **kwargs: Any) -> Iterator[Event]:
        """Follow the event log live (works from another process too)."""
        return follow_events(self.work.events_dir, **kwargs)

    def get_performance_summary(self) -> dict[str, Any]:
        return performance_summary(self.get_events())

    def generate_status_report(self) -> str:
        return status_report(self.work.root)

    def status(self) -> dict[str, Any]:
        return status(self.work.root)


def wait_timeout(next_due: float | None, now: float, inflight: int, capacity: int) -> float | None:
    """How long the scheduler may block in ``ray.wait``: ``None`` means until a task ends.

    With room to start the next queued partition, wait until its retry is due. Without room,
    only a task's end can change anything, so block: a zero timeout there would spin the
    driver at full CPU for as long as the queue waits for capacity.
    """
    if next_due is None or inflight >= capacity:
        return None
    return max(0.0, next_due - now)


def _unwrap(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _short_error(exc: BaseException) -> str:
    cause = _unwrap(exc)
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"


def _describe_change(old: Any, new: Any, path: str = "") -> str:
    """The differences between two recipe parts, as ``path: old -> new`` items."""
    return "; ".join(_diff(old, new, path)[:6]) or "fingerprint differs"


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(dict.fromkeys([*old, *new])):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{sub} added ({json.dumps(new[k], default=str)[:80]})")
            elif k not in new:
                out.append(f"{sub} removed")
            else:
                out.extend(_diff(old[k], new[k], sub))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(old):
                out.append(f"{sub} added ({json.dumps(new[i], default=str)[:80]})")
            elif i >= len(new):
                out.append(f"{sub} removed ({json.dumps(old[i], default=str)[:80]})")
            else:
                out.extend(_diff(old[i], new[i], sub))
        return out
    if old != new:
        return [f"{path}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]
    return []
