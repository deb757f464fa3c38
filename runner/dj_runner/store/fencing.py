"""Fencing across hosts: run claims, and commit records that carry who wrote them.

On a volume shared by several hosts the ``flock`` of ``lock.py`` may not exclude a second
writer (a replacement pod on another node while the old one is still terminating). So each
run also takes a *claim*: ``<work_dir>/claim.json`` holds a number, the epoch, that every new
run increments, and its run id. Every commit record carries the writer's ``run_id``,
``epoch`` and ``plan_id`` (a ``Fence``), and:

- a writer re-reads the claim just before each commit and stops (``Superseded``) once a newer
  run has claimed the work dir;
- readers of a commit log ignore a record whose epoch is lower than one appended before it
  (the late commit of a superseded writer), and any record of another plan.

Limits: the writer's check and its append are two steps, so a superseded writer can still
append one record in between; such a record belongs to the same recipe and plan (a changed
recipe or plan changes ``plan_id``), its file is checksummed, and a newer run's records that
precede it in the log outrank it. A claim is taken with a conditional write (``Blobs.create``
or ``Blobs.replace`` on the version read): of two runs claiming at once, one gets the next
epoch and the other reads again and takes the one after. In object storage that is
``If-None-Match``/``If-Match``; locally a hard link or a compare-then-rename under the work
dir's ``flock``.
"""

from __future__ import annotations

import json
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
        claim = read_claim(self.claim_root)
        if claim is not None and claim["epoch"] > self.epoch:
            raise Superseded(
                f"run {self.run_id} was superseded by run {claim['run_id']} "
                f"(claim {claim['epoch']} > {self.epoch}); this run stops writing"
            )


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


def read_claim(root: str | Path) -> dict[str, Any] | None:
    try:
        return _parse_claim(WorkDir(root).blobs.read(WorkDir.CLAIM))
    except OSError:
        return None


def take_claim(root: str | Path, run_id: str) -> Fence:
    """Claim the work dir for ``run_id``: one epoch above the previous claim."""
    work = WorkDir(root)
    for _ in range(100):
        got = work.blobs.read_versioned(WorkDir.CLAIM)
        previous = _parse_claim(got[0]) if got is not None else None
        epoch = (previous["epoch"] if previous else 0) + 1
        data = json.dumps(
            {"epoch": epoch, "run_id": run_id, "claimed_at": datetime.now(UTC).isoformat()},
            indent=1,
            sort_keys=True,
        ).encode()
        if got is None:
            won = work.blobs.create(WorkDir.CLAIM, data)
        else:
            won = work.blobs.replace(WorkDir.CLAIM, data, got[1])
        if won is not None:
            return Fence(run_id, epoch, None, work.uri)
    raise RunnerError(f"{work.show(WorkDir.CLAIM)}: could not claim the work dir (100 tries)")


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
