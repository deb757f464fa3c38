"""One partition's work: read or resume, run ops to a target, checkpoint, report events.

This is the body of a Ray task; it is a plain function so it can also run in-process.
It resumes from the partition's newest valid checkpoint at or before the target, reads
the source otherwise (verifying the content hash the plan recorded), applies ops in
order, applies committed global-op decisions, and checkpoints by the recipe's strategy
(committed on a background thread, ``CheckpointWriter``, while the next op runs).
Malformed records go to the partition's rejects file (``write_rejects``, read back by
``count_rejects``); a run's stop file (``stop_requested``) ends the task after its checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dj_runner.engine.apply import add_hashes, apply_keep_mask, apply_local_kept
from dj_runner.engine.global_decisions import GlobalDecision, read_decision
from dj_runner.errors import MalformedRecordError, OpError, ResumeRefused
from dj_runner.io.sources import (
    LINE_FORMATS,
    Malformed,
    SourceFile,
    ensure_text_columns,
    parse_lines,
    read_line_range,
    read_rows,
    records_to_table,
    reject_null_text,
)
from dj_runner.io.table_schema import concat_unified
from dj_runner.observe.event_log import EventLogger
from dj_runner.observe.resources import Span, Usage, peak_rss_bytes
from dj_runner.ops.common.base import STATS_COLUMN, Mapper, SampleError, TableOp
from dj_runner.plan.partitioner import PartitionPlan, columnar_hash, combine_digests
from dj_runner.recipe.parse import Recipe
from dj_runner.store.blobs import s3_retry_report
from dj_runner.store.checkpoint import (
    CheckpointDir,
    CheckpointKey,
    Commit,
    InvalidCheckpoint,
    Lineage,
    partition_store,
    selection_pays,
)
from dj_runner.store.fencing import Fence
from dj_runner.store.location import configure_s3
from dj_runner.store.workdir import WorkDir


class SourceChanged(ResumeRefused):
    """The input no longer matches the plan; resuming would mix different data."""


@dataclass
class OpStat:
    op_idx: int
    op_name: str
    rows_in: int
    rows_out: int
    duration: float
    usage: Usage = field(default_factory=Usage)


@dataclass
class PartitionResult:
    pid: int
    final_key: CheckpointKey
    rows_in: int
    rows_out: int
    rejected: int
    resumed_from: str | None
    op_stats: list[OpStat] = field(default_factory=list)
    #: The task's CPU time and its worker's peak RSS (``observe/resources.py``).
    usage: Usage = field(default_factory=Usage)
    #: Bytes read: the partition's input (from its source), or the checkpoint it resumed from.
    bytes_read: int = 0
    #: Bytes written: checkpoints and the rejects file.
    bytes_written: int = 0
    checkpoint_bytes: int = 0
    #: ``(process, its S3 retries so far)`` (``store.blobs.s3_retry_report``).
    s3_retries: tuple[str, int] | None = None

    def resources(self) -> dict[str, float]:
        """The task's resource fields (``observe.resources.RESOURCE_FIELDS``)."""
        return {
            "cpu_time_s": self.usage.cpu_time_s,
            "peak_rss_bytes": self.usage.peak_rss_bytes,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "checkpoint_bytes": self.checkpoint_bytes,
        }


def checkpoint_wanted(recipe: Recipe, step: int) -> bool:
    """Whether the strategy checkpoints after ``step`` ops (the final step is always kept)."""
    ck = recipe.checkpoint
    if step == len(recipe.process):
        return True
    if ck.strategy == "every_op":
        return True
    if ck.strategy == "every_n_ops":
        return step % ck.n_ops == 0
    if ck.strategy == "manual":
        return recipe.process[step - 1].name in ck.op_names
    return False


#: Lines parsed into one Arrow piece at a time while a partition is read.
READ_CHUNK_LINES = 2048


def read_source(
    part: PartitionPlan, sources: tuple[SourceFile, ...], recipe: Recipe
) -> tuple[pa.Table, list[Malformed]]:
    """Read a partition from its source ranges, streaming; verify its content hash."""
    configure_s3(recipe.s3)  # this process (a Ray worker) reads s3:// sources as the recipe says
    tables: list[pa.Table] = []
    bad: list[Malformed] = []
    digests = []

    def parse(chunk: list[tuple[int, bytes]], path: str) -> None:
        records, malformed = parse_lines(chunk, path, recipe.text_keys)
        bad.extend(malformed)
        if records:
            tables.append(records_to_table(records, recipe.text_keys))

    changed: list[str] = []
    for r in part.ranges:
        src = sources[r.file]
        before = len(digests)
        if src.fmt in LINE_FORMATS:
            h = hashlib.blake2b(digest_size=16)
            chunk: list[tuple[int, bytes]] = []
            for line_no, line in read_line_range(src, r.start, r.stop, r.first_line):
                h.update(line)
                chunk.append((line_no, line))
                if len(chunk) >= READ_CHUNK_LINES:
                    parse(chunk, src.path)
                    chunk = []
            parse(chunk, src.path)
            digests.append(h.hexdigest())
        else:
            t = read_rows(src, r.start, r.stop)
            digests.append(columnar_hash(t))
            t, nulls = reject_null_text(
                ensure_text_columns(t, recipe.text_keys), recipe.text_key, src.path, r.start
            )
            bad.extend(nulls)
            tables.append(t)
        if len(digests) > before and digests[-1] != r.digest and src.path not in changed:
            changed.append(src.path)
    if combine_digests(digests) != part.content_hash:
        files = ", ".join(changed) or ", ".join(
            dict.fromkeys(sources[r.file].path for r in part.ranges)
        )
        raise SourceChanged(
            f"input file {files} changed since the plan was made (its content differs in "
            f"partition {part.pid}, though its size and modification time may not); resuming "
            "would mix different data. Restore the input, or start over with --restart"
        )
    if not tables:
        return records_to_table([], recipe.text_keys), bad
    return concat_unified(tables), bad


def write_rejects(work: WorkDir, pid: int, bad: list[Malformed]) -> int:
    """Set partition ``pid``'s malformed records aside; returns the bytes written."""
    key = work.rejects_key(pid)
    if not bad:
        work.blobs.delete(key)
        return 0
    data = "".join(json.dumps(m.__dict__, ensure_ascii=False) + "\n" for m in bad).encode()
    work.blobs.write(key, data)
    return len(data)


def count_rejects(work: WorkDir, pid: int) -> int:
    """The malformed records set aside for partition ``pid`` (lines of its rejects file)."""
    data = work.blobs.read(work.rejects_key(pid))
    return 0 if data is None else data.count(b"\n")


#: In a bucket: the least seconds between two looks for the stop file by one process (each look
#: is a request; the grace period, 20 s by default, leaves room for it).
REMOTE_STOP_CHECK_S = 2.0
_stop_checked: dict[tuple[str, str], float] = {}


def stop_requested(work: WorkDir, fence: Fence | None) -> bool:
    """Whether this run's driver asked its partition tasks to stop (SIGTERM)."""
    if fence is None:
        return False
    if not work.is_local:
        now = time.monotonic()
        if now - _stop_checked.get((work.uri, fence.run_id), -1e9) < REMOTE_STOP_CHECK_S:
            return False
        _stop_checked[(work.uri, fence.run_id)] = now
    return work.blobs.exists(work.stop_key(fence.run_id))


def run_partition(
    work: WorkDir,
    recipe: Recipe,
    part: PartitionPlan,
    sources: tuple[SourceFile, ...],
    target: CheckpointKey,
    attempt: int,
    events: EventLogger,
    fence: Fence | None = None,
) -> PartitionResult:
    """Bring partition ``part`` to ``target`` and return what happened (under the run's
    ``fence``: its checkpoints are written only while the run's claim is the newest)."""
    pid = part.pid
    span = Span()
    store = partition_store(work, pid, recipe.checkpoint, fence)
    store.clean_temporaries()
    done = decision_in_place(work, recipe, part, target, store, events, fence, attempt)
    if done is not None:
        return done

    def on_invalid(commit: Any, reason: str) -> None:
        events.log(
            "checkpoint_invalid",
            f"discarding checkpoint {commit.file}: {reason}",
            partition_id=pid,
            checkpoint_path=store.show(commit.file),
            error_message=reason,
        )

    resumed = store.newest_valid(at_most=target, on_invalid=on_invalid)
    rejected = rejects_bytes = 0
    lineage: tuple[Commit, Lineage] | None = None
    if resumed is not None:
        commit, table = resumed
        key = commit.key
        lineage = store.lineage_of(commit, table)
        read = commit.bytes
        if commit.selection is not None and lineage is not None:
            read += lineage[0].bytes  # its base was read too
        events.log(
            "checkpoint_load",
            f"partition {pid} loaded {commit.file}",
            partition_id=pid,
            checkpoint_path=store.show(commit.file),
            operation_idx=key.step,
            input_rows=table.num_rows,
            checkpoint_bytes=read,
        )
        events.log(
            "partition_resume",
            f"partition {pid} resumes after {key.step} ops",
            partition_id=pid,
            retry_count=attempt,
            checkpoint_path=store.show(commit.file),
        )
    else:
        events.log(
            "partition_start",
            f"partition {pid} starts ({part.rows} rows)",
            partition_id=pid,
            retry_count=attempt,
            input_rows=part.rows,
            input_bytes=part.bytes,
        )
        table, bad = read_source(part, sources, recipe)
        read = part.bytes
        rejected = len(bad)
        rejects_bytes = write_rejects(work, pid, bad)
        if bad:
            events.log(
                "records_rejected",
                f"partition {pid}: {len(bad)} malformed records",
                partition_id=pid,
                metadata={"count": len(bad), "first": bad[0].__dict__},
            )
            if recipe.malformed_records == "fail":
                first = bad[0]
                raise MalformedRecordError(
                    f"malformed record in {first.source} line {first.line}: {first.error} "
                    "(set malformed_records: reject to skip such records)"
                )
        key = CheckpointKey(0)

    result = PartitionResult(
        pid, key, part.rows, table.num_rows, rejected, None if resumed is None else key.label
    )
    result.bytes_read = read
    reading = span.end()
    with CheckpointWriter(store, events, pid) as saver:
        if lineage is not None:
            saver.resumed_from(lineage[0])
        key, table = _run_ops(
            work,
            fence,
            recipe,
            pid,
            key,
            target,
            table,
            attempt,
            events,
            saver,
            result,
            None if lineage is None else lineage[1],
        )
    # Leaving the block waited for the last checkpoint: it is committed before the task reports.
    result.final_key = key
    result.rows_out = table.num_rows
    result.checkpoint_bytes = saver.bytes
    result.bytes_written = saver.bytes + rejects_bytes
    result.s3_retries = s3_retry_report()
    peaks = [reading, *(s.usage for s in result.op_stats)]
    result.usage = Usage(span.end().cpu_time_s, max(u.peak_rss_bytes for u in peaks))
    return result


def in_place_target(recipe: Recipe, target: CheckpointKey) -> int | None:
    """The global op whose decision alone brings a partition to ``target``, when it is the
    recipe's last op and ``target`` the final key (``decision_in_place``); else ``None``."""
    step = len(recipe.process) - 1
    if target != CheckpointKey(len(recipe.process)) or step < 0:
        return None
    return step if recipe.process[step].op.is_global else None


def decision_in_place(
    work: WorkDir,
    recipe: Recipe,
    part: PartitionPlan,
    target: CheckpointKey,
    store: CheckpointDir,
    events: EventLogger,
    fence: Fence | None,
    attempt: int,
    decision: GlobalDecision | None = None,
) -> PartitionResult | None:
    """Bring a partition whose newest checkpoint is the hashed one of the recipe's last op (a
    global op) to the final key by that op's decision alone: the hashed checkpoint's rows
    that the decision keeps, committed as a selection (``CheckpointDir.select``) from the
    hashed checkpoint's own file; the partition's texts are not read. ``None`` when that is
    not where the partition stands (the task then runs the ops as ever), when the hashed
    checkpoint fails its check (the ops, resuming from an earlier one, recompute it), or when
    it is a whole table in a bucket (fetching it would cost what loading it does).

    ``decision``: the op's committed decision, if the caller has read it (else read here).
    Safe on threads of the driver (``Executor``): its CPU time is the calling thread's, and
    the process's peak RSS is read, never reset."""
    step = in_place_target(recipe, target)
    if step is None:
        return None
    hashed = CheckpointKey(step, hashed=True)
    if store.newest_key() != hashed:
        return None
    commit = store.latest_commit(hashed)
    if commit is None or (commit.selection is None and not store.blobs.is_local):
        return None
    decision = decision or read_decision(work, step, fence)
    if decision is None:
        return None
    pid = part.pid
    spec = recipe.process[step]
    mask = decision.mask_for(pid)
    start = time.perf_counter()
    cpu = time.thread_time()
    try:
        final = store.select(
            commit,
            mask,
            target,
            spec.name,
            drop=spec.op.signature_columns,  # type: ignore[attr-defined]
        )
    except (InvalidCheckpoint, ValueError):
        return None
    store.drop_pruned()  # in a bucket, the hashed checkpoint's object (locally gone already)
    usage = Usage(round(time.thread_time() - cpu, 6), peak_rss_bytes())
    duration = time.perf_counter() - start
    # Its own file was read, not its table: the bytes read and written are files' bytes.
    events.log(
        "checkpoint_load",
        f"partition {pid} loaded {commit.file} (its own columns)",
        partition_id=pid,
        checkpoint_path=store.show(commit.file),
        operation_idx=step,
        input_rows=commit.rows,
        checkpoint_bytes=commit.bytes,
    )
    events.log(
        "partition_resume",
        f"partition {pid} resumes after {step} ops",
        partition_id=pid,
        retry_count=attempt,
        checkpoint_path=store.show(commit.file),
    )
    events.log(
        "op_start",
        f"{spec.name} on partition {pid}",
        partition_id=pid,
        operation_name=spec.name,
        operation_idx=step,
        input_rows=commit.rows,
    )
    events.log(
        "op_complete",
        f"{spec.name} on partition {pid}: {commit.rows} -> {final.rows} rows",
        partition_id=pid,
        operation_name=spec.name,
        operation_idx=step,
        input_rows=commit.rows,
        output_rows=final.rows,
        duration=duration,
        cpu_time_s=usage.cpu_time_s,
        peak_rss_bytes=usage.peak_rss_bytes,
        input_bytes=commit.bytes,
        output_bytes=final.bytes,
    )
    events.log(
        "checkpoint_save",
        f"partition {pid} checkpoint {final.file} ({final.rows} rows)",
        partition_id=pid,
        operation_name=spec.name,
        operation_idx=target.step,
        checkpoint_path=store.show(final.file),
        output_rows=final.rows,
        checkpoint_bytes=final.bytes,
        duration=duration,
    )
    result = PartitionResult(pid, target, part.rows, final.rows, 0, hashed.label)
    result.op_stats.append(OpStat(step, spec.name, commit.rows, final.rows, duration, usage))
    result.bytes_read = commit.bytes
    result.checkpoint_bytes = result.bytes_written = final.bytes
    result.s3_retries = s3_retry_report()
    result.usage = usage
    return result


def _run_ops(
    work: WorkDir,
    fence: Fence | None,
    recipe: Recipe,
    pid: int,
    key: CheckpointKey,
    target: CheckpointKey,
    table: pa.Table,
    attempt: int,
    events: EventLogger,
    saver: CheckpointWriter,
    result: PartitionResult,
    lineage: Lineage | None,
) -> tuple[CheckpointKey, pa.Table]:
    """Apply ops from ``key`` up to ``target``, handing checkpoints to ``saver``; ``lineage``
    (how the table derives from the last full checkpoint, if known) follows each op, so that
    a checkpoint after a filter, a deduplicator or a mapper followed by another mapper is a
    selection of that one (``store.checkpoint``)."""
    ops = recipe.process
    text_key = recipe.text_key
    while key < target:
        if stop_requested(work, fence):
            break  # the driver is stopping (SIGTERM): end after the last committed checkpoint
        step = key.step
        op = ops[step].op
        name = ops[step].name
        start = time.perf_counter()
        span = Span()
        n_in = table.num_rows
        bytes_in = table.nbytes
        events.log(
            "op_start",
            f"{name} on partition {pid}",
            partition_id=pid,
            operation_name=name,
            operation_idx=step,
            input_rows=n_in,
        )
        try:
            if op.is_global:
                signatures = op.signature_columns  # type: ignore[attr-defined]
                if not key.hashed:
                    table = add_hashes(op, table, text_key)  # type: ignore[arg-type]
                    lineage = lineage and lineage.changed(signatures)
                decision = read_decision(work, step, fence)
                if decision is None:
                    key = CheckpointKey(step, hashed=True)
                    saver.save(key, table, name, lineage)
                    break  # the driver decides for every partition, then calls again
                mask = decision.mask_for(pid)
                table = apply_keep_mask(table, mask, op)  # type: ignore[arg-type]
                lineage = lineage and lineage.kept(mask, dropped=signatures)
            else:
                before = table.column(text_key) if text_key in table.column_names else None
                table, kept = apply_local_kept(op, table, text_key)
                if lineage is None or isinstance(op, TableOp):
                    lineage = None  # (a table op may change anything)
                elif kept is not None:
                    lineage = lineage.kept(kept).changed([STATS_COLUMN])
                elif before is not None and _mapper_next(recipe, step):
                    # another mapper comes: the rows this one changed are a patch of the base
                    lineage = lineage.rewrote(text_key, before, table.column(text_key))
                else:  # the last of a run of mappers: written whole, the next ops' base
                    lineage = None
        except SampleError as exc:
            err = OpError(name, step, pid, exc.index, exc.preview, exc.cause)
            events.log(
                "op_failed",
                str(err),
                partition_id=pid,
                operation_name=name,
                operation_idx=step,
                error_message=str(err),
                error_type=type(exc.cause).__name__,
                stack_trace="".join(traceback.format_exception(exc.cause)),
                retry_count=attempt,
            )
            raise err from exc.cause
        duration = time.perf_counter() - start
        usage = span.end()
        key = CheckpointKey(step + 1)
        result.op_stats.append(OpStat(step, name, n_in, table.num_rows, duration, usage))
        events.log(
            "op_complete",
            f"{name} on partition {pid}: {n_in} -> {table.num_rows} rows",
            partition_id=pid,
            operation_name=name,
            operation_idx=step,
            input_rows=n_in,
            output_rows=table.num_rows,
            duration=duration,
            cpu_time_s=usage.cpu_time_s,
            peak_rss_bytes=usage.peak_rss_bytes,
            input_bytes=bytes_in,
            output_bytes=table.nbytes,
        )
        if checkpoint_wanted(recipe, key.step):
            lineage = saver.save(key, table, name, lineage)
    return key, table


def _mapper_next(recipe: Recipe, step: int) -> bool:
    """Whether the op after ``step`` is a mapper (of the text alone)."""
    ops = recipe.process
    return step + 1 < len(ops) and isinstance(ops[step + 1].op, Mapper)


class CheckpointWriter:
    """Commits one partition's checkpoints on a background thread while the next op runs.

    Saves run one at a time, in order, and at most one is in flight: ``save`` first waits for
    the previous one (re-raising its error), and leaving the ``with`` block waits for the last.
    Durability is unchanged: each save still writes, fsyncs and renames the file before it
    appends the commit record, so a crash mid-save leaves no commit and the resume uses the
    previous checkpoint. Only the op chain stops waiting on the disk. In a bucket the files
    the saves pruned are deleted at the end, in one request (``CheckpointDir.drop_pruned``).
    """

    def __init__(self, store: CheckpointDir, events: EventLogger, pid: int) -> None:
        self.store = store
        self.events = events
        self.pid = pid
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"checkpoint-p{pid}")
        self._pending: Future[None] | None = None
        #: Bytes of the checkpoints committed so far.
        self.bytes = 0
        #: The full checkpoints a selection may select from, by key.
        self._full: dict[CheckpointKey, Commit] = {}

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                self.wait()
                self.store.drop_pruned()
            else:  # the error in flight says more than a failed save would
                with contextlib.suppress(Exception):
                    self.wait()
                with contextlib.suppress(Exception):
                    self.store.drop_pruned()
        finally:
            self._pool.shutdown(wait=True)

    def resumed_from(self, base: Commit) -> None:
        """The full checkpoint the resumed table's lineage starts from."""
        self._full[base.key] = base

    def save(
        self, key: CheckpointKey, table: pa.Table, op_name: str, lineage: Lineage | None = None
    ) -> Lineage:
        """Save ``table`` as checkpoint ``key``: as a selection of its base when ``lineage``
        says it can be one (``selection_pays``), else whole. Returns the table's lineage from
        then on."""
        if not selection_pays(lineage, table):
            lineage = None
        self.wait()
        self._pending = self._pool.submit(self._save, key, table, op_name, lineage)
        return lineage if lineage is not None else Lineage.of_full(key, table)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _save(
        self, key: CheckpointKey, table: pa.Table, op_name: str, lineage: Lineage | None
    ) -> None:
        start = time.perf_counter()
        base = None if lineage is None else self._full.get(lineage.base_key)
        if base is None or lineage is None:
            commit = self.store.save(key, table, op_name)
        else:
            commit = self.store.save(key, table, op_name, base=(base, lineage))
        if commit.selection is None:
            self._full[key] = commit
        self.bytes += commit.bytes
        self.events.log(
            "checkpoint_save",
            f"partition {self.pid} checkpoint {commit.file} ({commit.rows} rows)",
            partition_id=self.pid,
            operation_name=op_name,
            operation_idx=key.step,
            checkpoint_path=self.store.show(commit.file),
            output_rows=commit.rows,
            checkpoint_bytes=commit.bytes,
            duration=time.perf_counter() - start,
        )
