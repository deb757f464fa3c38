"""Fencing across hosts: run claims, and commit records that carry who wrote them.

On a volume shared by several hosts the ``flock`` of ``lock.py`` may not exclude a second
writer (a replacement pod on another node while the old one is still terminating), and a bucket
has no ``flock`` at all. So each run also takes a *claim*: the next number, the epoch, as the
object ``<work_dir>/claims/<epoch>.json`` (with its run id), created only if it does not exist
(``Blobs.create``: a hard link on a volume, ``If-None-Match: *`` in a bucket). Of two runs
claiming at once one gets the epoch and the other takes the next: claims are atomic on every
store. The newest claim is the one with the highest epoch. Every commit record carries the writer's ``run_id``,
``epoch`` and ``plan_id`` (a ``Fence``), and:

- a writer re-reads the claim just before each commit and stops (``Superseded``) once a newer
  run has claimed the work dir;
- readers of a commit log ignore a record whose epoch is lower than one appended before it
  (the late commit of a superseded writer), and any record of another plan.

Limits: the writer's check and its append are two steps, so a superseded writer can still
append one record in between; such a record belongs to the same recipe and plan (a changed
recipe or plan changes ``plan_id``), its file is checksummed, and a newer run's records that
precede it in the log outrank it. A writer's check is one look at whether the claim of the
epoch after its own exists (epochs are taken one after the other).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dj_runner.errors import RunnerError
from dj_runner.store.workdir import WorkDir


@dataclass(frozen=True)
class Fence:
    """Who writes: the run id, its claim epoch, and the plan its checkpoints belong to."""

    run_id: str
    epoch: int
    plan_id: str | None = None
    claim_root: str | None = None  # the work dir whose claim is checked before each commit

    def with_plan(self, plan_id: str) -> Fence:
        return Fence(self.run_id, self.epoch, plan_id, self.claim_root)

    def record_fields(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "epoch": self.epoch, "plan_id": self.plan_id}

    def check_current(self) -> None:
        """Raise Superseded if a newer run has claimed the work dir since this one did."""
        if self.claim_root is None:
            return
        work = WorkDir(self.claim_root)
        if not work.is_local:
            # In a bucket each look is a request: at most one per REMOTE_CHECK_S per process.
            # A commit made between two looks by a run just superseded is a late commit that
            # readers order after the newer run's (``fenced``), as on a volume.
            now = time.monotonic()
            if now - _last_checked.get((self.claim_root, self.epoch), -1e9) < REMOTE_CHECK_S:
                return
            _last_checked[(self.claim_root, self.epoch)] = now
        newer = _parse_claim(work.blobs.read(WorkDir.claim_key(self.epoch + 1)))
        if newer is not None:
            raise Superseded(
                f"run {self.run_id} was superseded by run {newer['run_id']} "
                f"(claim {newer['epoch']} > {self.epoch}); this run stops writing"
            )


#: In a bucket: the least seconds between two looks for a newer claim by one process.
REMOTE_CHECK_S = 2.0
_last_checked: dict[tuple[str, int], float] = {}


class Superseded(RunnerError):
    """A newer run claimed the work dir; this run's writes would be ignored."""


def new_run_id() -> str:
    """A unique id of one runner process's run: UTC time, then random hex."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:12]


def _parse_claim(data: bytes | None) -> dict[str, Any] | None:
    try:
        raw = json.loads(data) if data is not None else None
        return {"epoch": int(raw["epoch"]), "run_id": str(raw["run_id"])}
    except (ValueError, KeyError, TypeError):
        return None


def _epochs(work: WorkDir) -> list[int]:
    out = []
    for entry in work.blobs.list(WorkDir.CLAIMS):
        name = entry.key.rsplit("/", 1)[-1]
        if name.endswith(".json") and name[:-5].isdigit():
            out.append(int(name[:-5]))
    return sorted(out)


def read_claim(root: str | Path) -> dict[str, Any] | None:
    """The newest claim: its epoch and run id (None before the first run)."""
    work = WorkDir(root)
    try:
        epochs = _epochs(work)
        return _parse_claim(work.blobs.read(WorkDir.claim_key(epochs[-1]))) if epochs else None
    except (OSError, RunnerError):
        return None


def take_claim(root: str | Path, run_id: str) -> Fence:
    """Claim the work dir for ``run_id``: the first epoch above every claim there."""
    work = WorkDir(root)
    epochs = _epochs(work)
    epoch = (epochs[-1] if epochs else 0) + 1
    for _ in range(1000):
        data = json.dumps(
            {"epoch": epoch, "run_id": run_id, "claimed_at": datetime.now(UTC).isoformat()},
            indent=1,
            sort_keys=True,
        ).encode()
        if work.blobs.create(WorkDir.claim_key(epoch), data) is not None:
            return Fence(run_id, epoch, None, work.uri)
        epoch += 1  # another run took it: the next one
    raise RunnerError(f"{work.show(WorkDir.CLAIMS)}: could not claim the work dir (1000 tries)")


def fenced(records: list[dict[str, Any]], plan_id: str | None) -> list[dict[str, Any]]:
    """The records of a commit log that count: same plan, not appended after a newer epoch."""
    out = []
    highest = 0
    for rec in records:
        epoch = rec.get("epoch", 0)
        if not isinstance(epoch, int):
            continue
        if epoch < highest:
            continue  # a superseded writer's late commit
        highest = epoch
        if plan_id is not None and rec.get("plan_id") != plan_id:
            continue
        out.append(rec)
    return out
