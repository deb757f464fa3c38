"""Warming a process for a recipe's ops: import their modules, load what they load once.

The local engine's fork server imports this module with ``WARM_OPS_ENV`` naming the recipe's
ops; each op's module is imported and its ``Op.warm`` run (fastText's model, for one), so every
worker forked from the server starts with them instead of loading them again for its partition.
Best effort: an op that cannot warm here loads what it needs in the worker, as without this.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from dj_runner.ops.common.registry import find_op

#: The ops (comma-separated registry names) a process started with it warms at this import.
WARM_OPS_ENV = "DJ_RUNNER_WARM_OPS"

log = logging.getLogger(__name__)


def warm_env(op_names: Iterable[str]) -> dict[str, str]:
    """The environment that makes a process importing this module warm ``op_names``."""
    return {WARM_OPS_ENV: ",".join(dict.fromkeys(op_names))}


def warm(op_names: Iterable[str]) -> list[str]:
    """Import each op's module and warm it; returns the ops warmed."""
    done = []
    for name in op_names:
        try:
            cls = find_op(name)
            if cls is not None:
                cls.warm()
                done.append(name)
        except Exception as exc:  # the worker loads it itself
            log.debug("op %s not warmed: %s", name, exc)
    return done


def _warm_from_env() -> None:
    names = [n for n in os.environ.get(WARM_OPS_ENV, "").split(",") if n]
    if names:
        warm(names)


_warm_from_env()
