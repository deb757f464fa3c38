"""The Python API in Data-Juicer's shape: ``init_configs``, the executor, ``EventType``.

Code written for Data-Juicer's partitioned executor runs here with its import line changed::

    from dj_runner.api import EventType, PartitionedRayExecutor, init_configs

    cfg = init_configs()                  # --config recipe.yaml on the command line
    executor = PartitionedRayExecutor(cfg)
    result = executor.run()
    events = executor.get_events(event_type=EventType.OPERATION_ERROR)

This module only gathers names; the executor (``engine/executor.py``), the recipe parser
(``recipe/parse.py``) and the event log (``observe/event_log.py``) own what they do.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dj_runner.engine.executor import Executor, JobResult
from dj_runner.errors import RecipeError
from dj_runner.observe.event_log import Event, EventType
from dj_runner.recipe.parse import Recipe, load_recipe, parse_recipe, resolve_path

__all__ = [
    "Event",
    "EventType",
    "Executor",
    "JobResult",
    "PartitionedRayExecutor",
    "Recipe",
    "init_configs",
]

#: Data-Juicer's name for the executor the seed's snippets build; this runner has one.
PartitionedRayExecutor = Executor

#: The command-line options ``init_configs`` reads, each with the keyword it becomes.
_OPTIONS = {
    "--config": "config",
    "--job_id": "job_id",
    "--job-id": "job_id",
    "--work_dir": "work_dir",
    "--work-dir": "work_dir",
}


def _options(args: Sequence[str]) -> dict[str, str]:
    """``--config PATH`` (or ``--config=PATH``), ``--job_id``, ``--work_dir`` from ``args``."""
    found: dict[str, str] = {}
    items = list(args)
    i = 0
    while i < len(items):
        name, eq, value = items[i].partition("=")
        if name not in _OPTIONS:
            raise RecipeError(
                "<arguments>", items[i], "one of " + ", ".join(sorted(_OPTIONS)) + " with a value"
            )
        if not eq:
            if i + 1 >= len(items):
                raise RecipeError(name, None, "a value after the option")
            i += 1
            value = items[i]
        found[_OPTIONS[name]] = value
        i += 1
    return found


def init_configs(
    args: str | Path | Mapping[str, Any] | Sequence[str] | None = None,
    job_id: str | None = None,
    work_dir: str | None = None,
) -> Recipe:
    """The validated recipe, as Data-Juicer's ``init_configs`` returns its config.

    ``args`` is a recipe file's path, a recipe mapping, or command-line arguments
    (``--config PATH [--job_id ID] [--work_dir DIR]``); None reads ``sys.argv[1:]``, as
    Data-Juicer does. Relative paths resolve against the current directory. Raises
    ``RecipeError`` naming the key, the value and what would be valid.
    """
    if isinstance(args, Mapping):
        recipe = parse_recipe(dict(args), job_id=job_id, work_dir=work_dir)
    elif isinstance(args, (str, Path)):
        recipe = load_recipe(args, job_id=job_id, work_dir=work_dir)
    else:
        opts = _options(sys.argv[1:] if args is None else args)
        if "config" not in opts:
            raise RecipeError("--config", None, "the path of a recipe YAML file")
        job_id = job_id or opts.get("job_id")
        work_dir = work_dir or opts.get("work_dir")
        recipe = load_recipe(opts["config"], job_id=job_id, work_dir=work_dir)
    # As Data-Juicer's config, the recipe carries the job id and work dir the caller chose.
    return dataclasses.replace(
        recipe,
        job_id=job_id or recipe.job_id,
        work_dir=resolve_path(Path.cwd(), work_dir) if work_dir else recipe.work_dir,
    )
