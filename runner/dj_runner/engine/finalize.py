"""The job's last steps: verify every partition's final checkpoint, then export them in order.

``broken_finals`` checks each final checkpoint against its commit record (size and checksum)
and deletes the ones that fail, so the driver recomputes them before the export; in a bucket
the checks run side by side (``each``) and keep the verified bytes, within a bound, for the
export (``CheckpointDir.verify(hold=True)``), which then reads no checkpoint twice.
``export_finals`` streams the final checkpoints, in plan order, into ``write_export``; while
one partition is written, a thread reads the next (``_read_ahead``), when its input is small.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from dj_runner.errors import RunnerError
from dj_runner.io.export import write_export
from dj_runner.plan.partitioner import Plan
from dj_runner.recipe.parse import Recipe
from dj_runner.store.checkpoint import (
    HELD_BYTES_MAX,
    CheckpointKey,
    Commit,
    InvalidCheckpoint,
    partition_store,
    release_held,
)
from dj_runner.store.fencing import Fence
from dj_runner.store.workdir import WorkDir

#: ``fn(pid)`` for each of ``pids``, as a dict (``Executor._each``: side by side in a bucket).
Each = Callable[[Callable[[int], Any], list[int]], dict[int, Any]]

#: The export reads a partition ahead, whole, while it writes the one before, when the
#: partition's input is at most this many bytes (so that two such partitions' tables at
#: most are held); a larger one is streamed a slice at a time when its turn comes.
READ_AHEAD_MAX_BYTES = 64 * 1024 * 1024


class _ByteBudget:
    """At most ``limit`` bytes of checkpoints fetched at once by the side-by-side checks (one
    larger than the whole budget is fetched alone)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def take(self, n: int) -> Iterator[None]:
        n = min(n, self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


def _serially(fn: Callable[[int], Any], pids: list[int]) -> dict[int, Any]:
    return {pid: fn(pid) for pid in pids}


def broken_finals(
    work: WorkDir,
    recipe: Recipe,
    plan: Plan,
    exclude: set[int],
    on_invalid: Callable[[int, str], None],
    fence: Fence | None = None,
    each: Each = _serially,
) -> tuple[list[Any], dict[int, Commit]]:
    """The partitions (not in ``exclude``) whose final checkpoint is missing or fails, and
    the final commit of each of the others (what ``export_finals`` exports)."""
    final = CheckpointKey(len(recipe.process))
    pids = [p.pid for p in plan.partitions if p.pid not in exclude]
    budget = _ByteBudget(HELD_BYTES_MAX)

    def check(pid: int) -> tuple[Commit | None, str | None]:
        store = partition_store(work, pid, recipe.checkpoint, fence)
        commit = store.latest_commit(final)
        try:
            if commit is None:
                raise InvalidCheckpoint("no final checkpoint")
            with budget.take(commit.bytes):
                store.verify(commit, hold=True)
        except InvalidCheckpoint as exc:
            return commit, str(exc)
        return commit, None

    checked = each(check, pids)
    broken = []
    good: dict[int, Commit] = {}
    for part in plan.partitions:  # in plan order: the events, and the deletes, in one order
        if part.pid not in checked:
            continue
        commit, why = checked[part.pid]
        if why is None and commit is not None:
            good[part.pid] = commit
            continue
        on_invalid(part.pid, str(why))
        if commit is not None:
            partition_store(work, part.pid, recipe.checkpoint, fence).delete(commit)
        broken.append(part)
    return broken, good


def export_finals(
    work: WorkDir,
    recipe: Recipe,
    plan: Plan,
    exclude: set[int],
    fence: Fence | None = None,
    known: dict[int, Commit] | None = None,
) -> int:
    """Write the export from the final checkpoints (just verified); returns the rows written.

    ``known``: final commits just verified (``broken_finals``), not looked up again."""
    try:
        return _export(work, recipe, plan, exclude, fence, known or {})
    finally:
        release_held()  # what the export did not read (it failed midway) is not kept


def _export(
    work: WorkDir,
    recipe: Recipe,
    plan: Plan,
    exclude: set[int],
    fence: Fence | None,
    known: dict[int, Commit],
) -> int:
    final = CheckpointKey(len(recipe.process))
    parts = [p for p in plan.partitions if p.pid not in exclude]
    stores = [partition_store(work, p.pid, recipe.checkpoint, fence) for p in parts]
    commits = []
    for part, store in zip(parts, stores, strict=True):
        commit = known.get(part.pid) or store.latest_commit(final)
        if commit is None:
            raise RunnerError(
                f"{store.blobs.uri}: no final checkpoint to export; is the work dir on storage "
                "shared by the driver and every Ray worker, at the same path?"
            )
        commits.append(commit)
    schemas = [store.schema(c) for store, c in zip(stores, commits, strict=True)]

    # broken_finals verified every final checkpoint just before (or a task committed it
    # since): a Parquet checkpoint is streamed without a second checksum pass (in a bucket
    # from the bytes that check kept, when it could keep them); an Arrow or JSONL one on
    # local disk is loaded whole and verified again.
    reads = [
        functools.partial(store.iter_slices, commit, verified=True)
        for store, commit in zip(stores, commits, strict=True)
    ]
    ahead = [p.bytes <= READ_AHEAD_MAX_BYTES for p in parts]

    def partitions() -> Iterator[Iterator[pa.Table]]:
        return _read_ahead(reads, ahead)

    return write_export(recipe.export_path, partitions, schemas, recipe.keep_stats_in_res_ds)


def _read_ahead(
    reads: Sequence[Callable[[], Iterator[pa.Table]]], ahead: Sequence[bool]
) -> Iterator[Iterator[pa.Table]]:
    """Each partition's slices, in order. While the caller writes one, a thread reads the
    next whole if ``ahead`` says it may (reading Parquet and taking a selection's rows run
    outside the GIL, so on a second core); the others are streamed when their turn comes."""
    with cf.ThreadPoolExecutor(1, thread_name_prefix="dj-export-read") as pool:

        def submit(i: int) -> cf.Future[list[pa.Table]] | None:
            if i < len(reads) and ahead[i]:
                return pool.submit(lambda: list(reads[i]()))
            return None

        coming = submit(0)
        for i in range(len(reads)):
            current, coming = coming, submit(i + 1)
            try:
                yield iter(current.result()) if current is not None else reads[i]()
            except GeneratorExit:
                if coming is not None:
                    coming.cancel()
                raise
