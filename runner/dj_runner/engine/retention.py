"""Retention: what a finished job no longer needs in its work dir, and its removal.

``unneeded`` lists relative entries, each with its size and the reason; ``WorkDir.remove`` (the
one function that deletes) removes them. Never listed: what a resume needs (every checkpoint of
a job that did not succeed, the plan, the manifest, the claim, global decisions unless every
checkpoint goes) and what an audit needs (``result.json``, ``status.json``, ``job.json``,
``plan.json``, the rejects, the commit records and the last run's event log). Listed:

* a succeeded job's checkpoints beyond the policy: ``final`` keeps each partition's last
  (and, for a selection checkpoint, its base),
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
import time
from dataclasses import dataclass

from dj_runner.contract import GLOBAL_DIR
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


def _checkpoint_entries(work: WorkDir, keep: str) -> list[tuple[str, str]]:
    """A succeeded job's checkpoint files the policy ``keep`` does not keep."""
    if keep == "all":
        return []
    files = work.blobs.list(WorkDir.CHECKPOINTS)
    if not files:
        return []
    if keep == "none":
        found = [
            (WorkDir.CHECKPOINTS, "checkpoints of a succeeded job (retention.checkpoints: none)")
        ]
        if work.blobs.list(GLOBAL_DIR):
            found.append((GLOBAL_DIR, "global decisions of a succeeded job (checkpoints: none)"))
        return found
    by_partition: dict[str, list[str]] = {}
    for entry in files:
        parts = entry.key.split("/")
        if len(parts) == 3:  # checkpoints/pNNNNN/<file>: not the commit log's records
            by_partition.setdefault("/".join(parts[:2]), []).append(parts[2])
    found = []
    for pdir in sorted(by_partition):
        # Only read here: the format and compression matter to writers alone.
        commits = CheckpointDir(work.show(pdir), "parquet", "none").commits()
        if not commits:
            continue
        final = max(commits, key=lambda c: c.key)
        for name in sorted(by_partition[pdir]):
            if name == COMMITS or name in final.files or fnmatch.fnmatch(name, TMP_GLOB):
                continue
            named = any(c.file == name for c in commits)
            found.append(
                (
                    f"{pdir}/{name}",
                    "an intermediate checkpoint (retention.checkpoints: final)"
                    if named
                    else "a file no commit names (a superseded run's)",
                )
            )
    return found


def _segment_entries(
    work: WorkDir, policy: RetentionConfig, last_run_started: float | None, now: float
) -> list[tuple[str, str]]:
    """Earlier runs' event-log segments beyond the age and count limits."""
    age, count = policy.event_log_max_age_days, policy.event_log_max_segments
    if age is None and count is None:
        return []
    mtimes = {e.key: e.mtime for e in work.blobs.list(WorkDir.EVENTS)}
    earlier: list[tuple[float, str]] = []
    for seg in list_segments(work.events_uri):
        key = f"{WorkDir.EVENTS}/{seg.path.name}"
        mtime = mtimes.get(key)
        if mtime is None:
            continue
        if last_run_started is None or mtime < last_run_started:
            earlier.append((mtime, key))
    earlier.sort(reverse=True)  # newest first
    found = []
    kept = 0
    for mtime, key in earlier:
        if age is not None and now - mtime > age * _DAY_S:
            found.append((key, f"an earlier run's event log older than {age:g} days"))
        elif count is not None and kept >= count:
            found.append((key, f"an earlier run's event log beyond the newest {count}"))
        else:
            kept += 1
    return found


def _leftovers(work: WorkDir) -> list[tuple[str, str]]:
    """Stop files and temporaries of runs that ended (no runner holds the work dir)."""
    found = [(k, "a stop file of a run that ended") for k in work.stop_keys()]
    for entry in work.blobs.list(""):
        if fnmatch.fnmatch(entry.key.rsplit("/", 1)[-1], TMP_GLOB):
            found.append((entry.key, "a half-written temporary of a run that ended"))
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
    found: list[tuple[str, str]] = []
    if succeeded:
        found += _checkpoint_entries(work, policy.checkpoints)
    found += _segment_entries(work, policy, last_run_started, now)
    if leftovers:
        gone = {k for k, _ in found}
        found += [
            (k, why)
            for k, why in _leftovers(work)
            if k not in gone and not any(k.startswith(d + "/") for d in gone)
        ]
    return [Entry(key, work.size(key), why) for key, why in found]


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
    lock = WorkDirLock(work.uri, WorkDirLock.holder_for(new_run_id(), now_rfc3339()))
    lock.acquire(wait_for_lock_s)
    try:
        st = read_status(work.uri) or {}
        state = str(st.get("state") or "not_started")
        started = st.get("started_at")
        begun = parse_rfc3339(started).timestamp() if isinstance(started, str) else None
        entries = unneeded(work, policy, state == "succeeded", begun)
        freed = 0
        if not dry_run and entries:
            freed = work.remove(e.path for e in entries)
            with EventLogger(work.events_uri, str(st.get("job_id") or "")) as log:
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
