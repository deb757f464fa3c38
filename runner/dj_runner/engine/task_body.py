"""The partition task's entry point in a worker process, shared by every backend.

A backend (``ray_backend`` on Ray, ``local_backend`` in a pool of local processes) runs
``partition_task_entry`` in a worker: it opens the work dir and runs, under the run's fencing
token, ``partition_task.run_partition``. Both backends run this same function on the same arguments,
so the checkpoints and the output they produce are the same bytes. ``raise_task_error`` turns a
task's error into what the scheduler expects (an ``ENOSPC`` into ``NoSpace``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from dj_runner.engine.partition_task import PartitionResult, run_partition
from dj_runner.io.sources import SourceFile
from dj_runner.observe.event_log import EventLogger
from dj_runner.recipe.parse import Recipe
from dj_runner.store.checkpoint import CheckpointKey
from dj_runner.store.fencing import Fence
from dj_runner.store.nospace import NO_SPACE_ERRNOS, no_space
from dj_runner.store.workdir import WorkDir


@dataclass(frozen=True)
class StageTask:
    """What every partition task of one stage is given, whichever backend runs it: the work
    dir, the recipe, the input files, the checkpoint to reach, the job and the run's fence."""

    work_root: str
    recipe: Recipe
    sources: tuple[SourceFile, ...]
    target: CheckpointKey
    job_id: str
    fence: Fence | None

    def args(self, part: Any, attempt: int) -> tuple[Any, ...]:
        """``partition_task_entry``'s arguments for ``part``'s attempt ``attempt``."""
        return (
            self.work_root,
            self.recipe,
            part,
            self.sources,
            self.target,
            attempt,
            self.job_id,
            self.fence,
        )


def event_logger(work: WorkDir, job_id: str, ev: Any) -> EventLogger:
    return EventLogger(
        work.events_uri, job_id, ev.max_log_size_mb, ev.backup_count, ev.enabled, ev.log_level
    )


def partition_task_entry(
    work_root: str,
    recipe: Recipe,
    part: Any,
    sources: tuple[SourceFile, ...],
    target: CheckpointKey,
    attempt: int,
    job_id: str,
    fence: Fence | None = None,
) -> PartitionResult:
    work = WorkDir(work_root)
    ev = recipe.event_logging
    with event_logger(work, job_id, ev) as log:
        return run_partition(work, recipe, part, sources, target, attempt, log, fence)


def raise_task_error(cause: BaseException, work_root: str) -> NoReturn:
    """Raise a task's error as the scheduler sees it: a full disk the task's own writes did not
    name is still fatal (``NoSpace``), never retried; anything else as it is."""
    if isinstance(cause, OSError) and cause.errno in NO_SPACE_ERRNOS:
        raise no_space(cause.filename or work_root, cause) from None
    raise cause
