"""Retention: what a finished job no longer needs in its work dir, and its removal.

``unneeded`` lists relative entries, each with its size and the reason; ``WorkDir.remove`` (the
one function that deletes) removes them. Never listed: what a resume needs (every checkpoint of
a job that did not succeed, the plan, the manifest, the claim, global decisions unless every
checkpoint goes) and what an audit needs (``result.json``, ``status.json``, ``job.json``,
``plan.json``, the rejects, the commit records and the last run's event log). Listed:

* a succeeded job's checkpoints beyond the policy: ``final`` keeps each partition's last,
  ``none`` removes the checkpoints and global decisions (a rerun then recomputes), ``all``
  keeps them; files in a partition's directory no commit names (a superseded run's);
* event-log segments of earlier runs beyond ``event_log_max_age_days`` or
  ``event_log_max_segments``;
* leftovers: stop files and half-written temporaries of runs that ended.

The run applies it at its end (``Executor``); ``dj-runner clean DIR`` applies it to a work dir
no runner holds.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dj_runner.observe.event_log import EventLogger, EventType, list_segments
from dj_runner.observe.status_file import now_rfc3339, parse_rfc3339, read_status
from dj_runner.recipe.parse import RetentionConfig
from dj_runner.store.atomic import TMP_GLOB
from dj_runner.store.checkpoint import COMMITS, CheckpointDir
from dj_runner.store.fencing import new_run_id
from dj_runner.store.lock import WorkDirLock
from dj_runner.store.workdir import WorkDir

__all__ = ["Cleaned", "Entry", "clean", "unneeded"]

_DAY_S = 86400.0


@dataclass(frozen=True)
class Entry:
    """One thing to remove: a path relative to the work dir, its bytes, and why."""

    path: str
    bytes: int
    why: str


def _checkpoint_entries(work: WorkDir, keep: str) -> list[tuple[Path, str]]:
    """A succeeded job's checkpoint files the policy ``keep`` does not keep."""
    root = work.checkpoints_dir
    if keep == "all" or not root.is_dir():
        return []
    if keep == "none":
        found = [(root, "checkpoints of a succeeded job (retention.checkpoints: none)")]
        gdir = work.globals_dir
        if gdir.is_dir():
            found.append((gdir, "global decisions of a succeeded job (checkpoints: none)"))
        return found
    found = []
    for pdir in sorted(p for p in root.iterdir() if p.is_dir()):
        # Only read here: the format and compression matter to writers alone.
        commits = CheckpointDir(pdir, "parquet", "none").commits()
        if not commits:
            continue
        final = max(commits, key=lambda c: c.key)
        for f in sorted(pdir.iterdir()):
            if f.name in (COMMITS, final.file) or fnmatch.fnmatch(f.name, TMP_GLOB):
                continue
            named = any(c.file == f.name for c in commits)
            found.append(
                (
                    f,
                    "an intermediate checkpoint (retention.checkpoints: final)"
                    if named
                    else "a file no commit names (a superseded run's)",
                )
            )
    return found


def _segment_entries(
    work: WorkDir, policy: RetentionConfig, last_run_started: float | None, now: float
) -> list[tuple[Path, str]]:
    """Earlier runs' event-log segments beyond the age and count limits."""
    age, count = policy.event_log_max_age_days, policy.event_log_max_segments
    if age is None and count is None:
        return []
    earlier: list[tuple[float, Path]] = []
    for seg in list_segments(work.events_dir):
        try:
            mtime = seg.path.stat().st_mtime
        except FileNotFoundError:
            continue
        if last_run_started is None or mtime < last_run_started:
            earlier.append((mtime, seg.path))
    earlier.sort(reverse=True)  # newest first
    found = []
    kept = 0
    for mtime, path in earlier:
        if age is not None and now - mtime > age * _DAY_S:
            found.append((path, f"an earlier run's event log older than {age:g} days"))
        elif count is not None and kept >= count:
            found.append((path, f"an earlier run's event log beyond the newest {count}"))
        else:
            kept += 1
    return found


def _leftovers(work: WorkDir) -> list[tuple[Path, str]]:
    """Stop files and temporaries of runs that ended (no runner holds the work dir)."""
    found = [(p, "a stop file of a run that ended") for p in work.stop_paths()]
    for base, _dirs, files in os.walk(work.root):
        for name in files:
            if fnmatch.fnmatch(name, TMP_GLOB):
                found.append((Path(base) / name, "a half-written temporary of a run that ended"))
    return found


def unneeded(
    work: WorkDir,
    policy: RetentionConfig,
    succeeded: bool,
    last_run_started: float | None,
    now: float | None = None,
    leftovers: bool = True,
) -> list[Entry]:
    """What the finished job in ``work`` no longer needs under ``policy``.

    ``succeeded``: the last run succeeded (else every checkpoint stays, for the resume).
    ``last_run_started``: when the last run began (its event log is kept whole; None: no
    run recorded, every segment counts as an earlier run's). ``leftovers``: list stop files and
    temporaries too (only when no runner is at work).
    """
    now = time.time() if now is None else now
    found: list[tuple[Path, str]] = []
    if succeeded:
        found += _checkpoint_entries(work, policy.checkpoints)
    found += _segment_entries(work, policy, last_run_started, now)
    if leftovers:
        gone = {p for p, _ in found}
        found += [
            (p, why)
            for p, why in _leftovers(work)
            if p not in gone and not any(d in p.parents for d in gone)
        ]
    entries = []
    for path, why in found:
        rel = work.relative(path)
        entries.append(Entry(rel, work.size(rel), why))
    return entries


@dataclass(frozen=True)
class Cleaned:
    """What ``clean`` removed (or, in a dry run, would remove) and what is left."""

    entries: list[Entry]
    bytes_freed: int
    bytes_left: int
    state: str


def clean(
    work: WorkDir, policy: RetentionConfig, dry_run: bool = False, wait_for_lock_s: float = 0.0
) -> Cleaned:
    """Apply ``policy`` to a work dir no runner holds (``dj-runner clean``).

    Takes the work dir's lock for the while (``WorkDirLocked`` when a runner still holds it
    after ``wait_for_lock_s``), so no run starts meanwhile; records a ``cleanup`` event with
    the bytes freed.
    """
    lock = WorkDirLock(work.root, WorkDirLock.holder_for(new_run_id(), now_rfc3339()))
    lock.acquire(wait_for_lock_s)
    try:
        st = read_status(work.root) or {}
        state = str(st.get("state") or "not_started")
        started = st.get("started_at")
        begun = parse_rfc3339(started).timestamp() if isinstance(started, str) else None
        entries = unneeded(work, policy, state == "succeeded", begun)
        freed = 0
        if not dry_run and entries:
            freed = work.remove(e.path for e in entries)
            with EventLogger(work.events_dir, str(st.get("job_id") or "")) as log:
                log.log(
                    EventType.CLEANUP,
                    f"dj-runner clean removed {len(entries)} entries: {freed:,} bytes freed",
                    entries_removed=len(entries),
                    bytes_freed=freed,
                    removed=[e.path for e in entries[:100]],
                )
        return Cleaned(entries, freed, work.size(), state)
    finally:
        lock.release()
