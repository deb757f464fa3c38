"""The job's plan across runs: reuse the saved one (after checking the input against it), or
plan anew, and the plan id that ties every checkpoint to the plan and the recipe.

A saved plan is reused only if the input still matches it: a file whose size or modification
time changed, or that vanished, or a file added to a directory or glob dataset, is refused
(``ResumeRefused``, exit 4). A plan of another plan version is refused (``PlanRefused``). A
damaged ``plan.json`` is planned again; the old plan's checkpoints are dropped with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from dj_runner.errors import PlanRefused, ResumeRefused, short_error
from dj_runner.io.sources import list_sources
from dj_runner.plan.manifest import fingerprint
from dj_runner.plan.partitioner import PLAN_VERSION, Plan, build_plan
from dj_runner.recipe.parse import Recipe
from dj_runner.store.workdir import WorkDir

Log = Callable[..., None]


def plan_id(plan: Plan, recipe: Recipe) -> str:
    """A hash of the recipe's fingerprint and the plan: commit records carry it."""
    blob = json.dumps(plan.to_dict(), sort_keys=True)
    return hashlib.sha256(f"{fingerprint(recipe)}\0{blob}".encode()).hexdigest()[:16]


def load_or_build_plan(
    work: WorkDir, recipe: Recipe, cpus: int, log: Log, note: Callable[[str], None]
) -> tuple[Plan, str]:
    """The job's plan and its id; ``log(event_type, message, **fields)`` records events."""
    plan = load_plan(work, recipe, log, note)
    if plan is None:
        if work.has_progress():
            work.wipe_checkpoints()  # they belong to a plan that is gone
        plan = build_plan(list_sources(recipe.dataset_path), recipe.partition, cpus)
        plan.save(work.plan_path)
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
    return plan, plan_id(plan, recipe)


def load_plan(work: WorkDir, recipe: Recipe, log: Log, note: Callable[[str], None]) -> Plan | None:
    """The saved plan, checked against the input; None when there is none or it is damaged."""
    path = work.plan_path
    if not path.exists():
        return None
    try:
        raw: Any = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("version") != PLAN_VERSION:
            raise PlanRefused(
                f"{path} has plan version {raw.get('version')!r}, and this runner reads "
                f"version {PLAN_VERSION}; use --restart to start over, or the runner "
                "version that made it"
            )
        plan = Plan.from_dict(raw)
    except PlanRefused:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"{path} is damaged ({short_error(exc)}); planning again and recomputing"
        note(why)
        log("checkpoint_invalid", why, error_message=why)
        return None
    check_input(plan, recipe)
    log(
        "partition_plan_loaded",
        f"reusing the plan: {len(plan.partitions)} partitions",
        total_partitions=len(plan.partitions),
    )
    return plan


def check_input(plan: Plan, recipe: Recipe) -> None:
    """Refuse when the input's files differ from the plan's (changed, vanished or added)."""
    current = {s.path: s for s in list_sources(recipe.dataset_path)}
    for src in plan.sources:
        now = current.get(src.path)
        if now is None or (now.size, now.mtime_ns) != (src.size, src.mtime_ns):
            raise ResumeRefused(
                f"input file {src.path} changed or vanished since the plan was made; "
                "restore it, or use --restart to start over"
            )
    added = sorted(set(current) - {s.path for s in plan.sources})
    if added:
        shown = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
        raise ResumeRefused(
            f"{len(added)} input file(s) were added to {recipe.dataset_path} since the "
            f"plan was made ({shown}); this job would not process them. Use --restart to "
            "start over with them, or remove them"
        )
