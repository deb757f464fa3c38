"""The job's last steps: verify every partition's final checkpoint, then export them in order.

``broken_finals`` checks each final checkpoint against its commit record (size and checksum)
and deletes the ones that fail, so the driver recomputes them before the export; in a bucket
the checks run side by side (``each``) and keep the verified bytes, within a bound, for the
export (``CheckpointDir.verify(hold=True)``), which then reads no checkpoint twice.
``export_finals`` streams the final checkpoints, in plan order, into ``write_export``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

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

    def partitions() -> Iterator[Iterator[Any]]:
        for store, commit in zip(stores, commits, strict=True):
            # broken_finals verified every final checkpoint just before (or a task committed
            # it since): a Parquet checkpoint is streamed without a second checksum pass (in a
            # bucket from the bytes that check kept, when it could keep them); an Arrow or
            # JSONL one on local disk is loaded whole and verified again.
            yield store.iter_slices(commit, verified=True)

    return write_export(recipe.export_path, partitions, schemas, recipe.keep_stats_in_res_ds)
