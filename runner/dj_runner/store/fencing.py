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
precede it in the log outrank it. Claims are only as atomic as ``rename`` on the volume.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dj_runner.errors import RunnerError
from dj_runner.store.atomic import write_json_atomic
from dj_runner.store.workdir import WorkDir


@dataclass(frozen=True)
class Fence:
    """Who writes: the run id, its claim epoch, and the plan its checkpoints belong to."""

    run_id: str
    epoch: int
    plan_id: str | None = None
    claim_path: str | None = None  # checked before each commit when set

    def with_plan(self, plan_id: str) -> Fence:
        return Fence(self.run_id, self.epoch, plan_id, self.claim_path)

    def record_fields(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "epoch": self.epoch, "plan_id": self.plan_id}

    def check_current(self) -> None:
        """Raise Superseded if a newer run has claimed the work dir since this one did."""
        if self.claim_path is None:
            return
        claim = read_claim(Path(self.claim_path).parent)
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


def read_claim(root: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads(WorkDir(root).claim_path.read_text())
        return {"epoch": int(data["epoch"]), "run_id": str(data["run_id"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def take_claim(root: str | Path, run_id: str) -> Fence:
    """Claim the work dir for ``run_id``: one epoch above the previous claim."""
    path = WorkDir(root).claim_path
    previous = read_claim(root)
    epoch = (previous["epoch"] if previous else 0) + 1
    write_json_atomic(
        path,
        {"epoch": epoch, "run_id": run_id, "claimed_at": datetime.now(UTC).isoformat()},
    )
    return Fence(run_id, epoch, None, str(path))


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
