"""The job's last steps: verify every partition's final checkpoint, then export them in order.

``broken_finals`` checks each final checkpoint against its commit record (size and checksum)
and deletes the ones that fail, so the driver recomputes them before the export.
``export_finals`` streams the final checkpoints, in plan order, into ``write_export``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from dj_runner.errors import RunnerError
from dj_runner.io.export import write_export
from dj_runner.plan.partitioner import Plan
from dj_runner.recipe.parse import Recipe
from dj_runner.store.checkpoint import CheckpointKey, InvalidCheckpoint, partition_store
from dj_runner.store.fencing import Fence
from dj_runner.store.workdir import WorkDir


def broken_finals(
    work: WorkDir,
    recipe: Recipe,
    plan: Plan,
    exclude: set[int],
    on_invalid: Callable[[int, str], None],
    fence: Fence | None = None,
) -> list[Any]:
    """The partitions (not in ``exclude``) whose final checkpoint is missing or fails."""
    final = CheckpointKey(len(recipe.process))
    broken = []
    for part in plan.partitions:
        if part.pid in exclude:
            continue
        store = partition_store(work, part.pid, recipe.checkpoint, fence)
        commit = store.latest_commit(final)
        try:
            if commit is None:
                raise InvalidCheckpoint("no final checkpoint")
            store.verify(commit)
        except InvalidCheckpoint as exc:
            on_invalid(part.pid, str(exc))
            if commit is not None:
                store.delete(commit)
            broken.append(part)
    return broken


def export_finals(
    work: WorkDir, recipe: Recipe, plan: Plan, exclude: set[int], fence: Fence | None = None
) -> int:
    """Write the export from the final checkpoints (just verified); returns the rows written."""
    final = CheckpointKey(len(recipe.process))
    stores = [
        partition_store(work, p.pid, recipe.checkpoint, fence)
        for p in plan.partitions
        if p.pid not in exclude
    ]
    commits = []
    for store in stores:
        commit = store.latest_commit(final)
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
            # it since): a Parquet checkpoint is streamed without a second checksum pass; an
            # Arrow or JSONL one is loaded whole and verified again.
            yield store.iter_slices(commit, verified=True)

    return write_export(recipe.export_path, partitions, schemas, recipe.keep_stats_in_res_ds)
