"""The job's plan across runs: reuse the saved one (after checking the input against it), or
plan anew, and the plan id that ties every checkpoint to the plan and the recipe.

A saved plan is reused only if the input still matches it: a file whose size or modification
time changed, or that vanished, or a file added to a directory or glob dataset, is refused
(``ResumeRefused``, exit 4). A plan of another plan version is refused (``PlanRefused``). A
damaged ``plan.json`` is planned again; the old plan's checkpoints are dropped with it.

``verify_content`` checks the content itself: the partitions a run will not read from the
source again (those with a checkpoint, all of them once the job has finished) are hashed
and compared with the plan's content hashes, so a file rewritten with the same size and
modification time is refused too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from dj_runner.errors import PlanRefused, ResumeRefused, short_error
from dj_runner.io.sources import LINE_FORMATS, iter_lines, list_sources, read_rows
from dj_runner.plan.manifest import fingerprint
from dj_runner.plan.partitioner import (
    PLAN_VERSION,
    Plan,
    SourceRange,
    build_plan,
    columnar_hash,
)
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
        work.blobs.write_json(WorkDir.PLAN, plan.to_dict())
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
    path = work.show(WorkDir.PLAN)
    try:
        data = work.blobs.read(WorkDir.PLAN)
        if data is None:
            return None
        raw: Any = json.loads(data)
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


def verify_content(plan: Plan, pids: list[int]) -> None:
    """Hash the source ranges of partitions ``pids`` and compare them with the plan.

    Each line file is read once, whatever the number of ranges; a columnar range is read as
    a partition task reads it. Raises ``ResumeRefused`` naming the first file and partition
    whose content differs.
    """
    owner: dict[int, dict[tuple[int, int], int]] = {}  # file -> (start, stop) -> pid
    wanted: dict[int, list[SourceRange]] = {}
    for pid in sorted(set(pids)):
        for r in plan.partitions[pid].ranges:
            wanted.setdefault(r.file, []).append(r)
            owner.setdefault(r.file, {})[(r.start, r.stop)] = pid
    for idx, ranges in sorted(wanted.items()):
        src = plan.sources[idx]
        ranges.sort(key=lambda r: r.start)
        if src.fmt in LINE_FORMATS:
            bad = _first_changed_line_range(src, ranges)
        else:
            bad = next(
                (r for r in ranges if columnar_hash(read_rows(src, r.start, r.stop)) != r.digest),
                None,
            )
        if bad is not None:
            pid = owner[idx][(bad.start, bad.stop)]
            raise ResumeRefused(
                f"input file {src.path} changed since the plan was made: its content differs "
                f"in partition {pid}, though its size and modification time did not change; "
                "the output on record was made from other data. Restore the input, or use "
                "--restart to process it anew"
            )


def _first_changed_line_range(src: Any, ranges: list[SourceRange]) -> SourceRange | None:
    """The first of ``ranges`` (sorted, of one line file) whose lines hash differently."""
    i = 0
    h = hashlib.blake2b(digest_size=16)
    for _, offset, line in iter_lines(src):
        while i < len(ranges) and offset >= ranges[i].stop:
            if h.hexdigest() != ranges[i].digest:
                return ranges[i]
            i, h = i + 1, hashlib.blake2b(digest_size=16)
        if i == len(ranges):
            return None
        if offset >= ranges[i].start:
            h.update(line)
    while i < len(ranges):  # ranges past the end of the file
        if h.hexdigest() != ranges[i].digest:
            return ranges[i]
        i, h = i + 1, hashlib.blake2b(digest_size=16)
    return None
