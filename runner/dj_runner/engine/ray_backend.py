"""The scheduler's Ray backend, and the partition task's entry point in a Ray worker.

``RayTaskBackend`` submits one Ray task per partition attempt, waits with a timeout, unwraps a
task's error to the op's own exception (an ``ENOSPC`` one to ``NoSpace``), and turns a broken
connection to Ray into ``RayUnavailable`` (exit 7). The task body is
``task_body.partition_task_entry``, the same for every backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Hashable
from typing import Any

from dj_runner.engine.task_body import StageTask, partition_task_entry, raise_task_error
from dj_runner.errors import RayUnavailable, short_error


class RayTaskBackend:
    """The scheduler's backend on Ray: one Ray task per partition attempt."""

    def __init__(self, stage: StageTask) -> None:
        import ray

        self._ray = ray
        self._task = ray.remote(num_cpus=1, max_retries=0)(partition_task_entry)
        # The recipe and the input files go to the object store once, not with every task.
        self._stage = dataclasses.replace(
            stage, recipe=ray.put(stage.recipe), sources=ray.put(stage.sources)
        )

    def submit(self, part: Any, attempt: int) -> Hashable:
        return self._task.remote(*self._stage.args(part, attempt))

    def wait(self, handles: list[Hashable], timeout: float | None) -> list[Hashable]:
        try:
            ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        except Exception as exc:
            raise RayUnavailable(f"lost the connection to Ray: {short_error(exc)}") from None
        return ready

    def result(self, handle: Hashable) -> Any:
        from ray.exceptions import RayTaskError

        try:
            return self._ray.get(handle)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise_task_error(
                cause if isinstance(cause, BaseException) else exc, self._stage.work_root
            )
        except ConnectionError as exc:
            raise RayUnavailable(f"lost the connection to Ray: {short_error(exc)}") from None

    def cancel(self, handle: Hashable) -> None:
        # already finished, or Ray is going away: nothing to cancel
        with contextlib.suppress(Exception):
            self._ray.cancel(handle, force=True)
