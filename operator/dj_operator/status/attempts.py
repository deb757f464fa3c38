"""Runner attempts: merged from the recorded status and the observed pods, and classified.

The attempt count is derived, never counted: an attempt is a pod `<job>-runner-<n>`, observed
or recorded in status. A recorded attempt whose pod is gone ended with reason PodDeleted. So an
operator killed between creating a pod and writing status neither duplicates nor miscounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dj_operator.api import constants as c
from dj_operator.status import times
from dj_runner import contract
from dj_runner.contract import ExitCode

Obj = dict[str, Any]


# Outcomes of a finished attempt.
SUCCEEDED = "succeeded"
PARTIAL = "partial"
TERMINAL = "terminal"
RETRYABLE = "retryable"
STOPPED = "stopped"  # stopped by the operator (suspend, deadline): not a failure


@dataclass(frozen=True)
class Classified:
    outcome: str
    reason: str | None = None  # the failure reason for TERMINAL
    component: str = "runner"


def attempt_of(pod: Obj) -> int | None:
    value = (pod.get("metadata", {}).get("labels") or {}).get(contract.LABEL_ATTEMPT)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def pod_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_active(pod: Obj) -> bool:
    """Not terminal: running, pending or still terminating."""
    return not pod_terminal(pod)


def _terminated(pod: Obj) -> Obj | None:
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == c.RUNNER_CONTAINER and (cs.get("state") or {}).get("terminated"):
            return cs["state"]["terminated"]
    for cs in status.get("initContainerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term and term.get("exitCode"):
            return {**term, "reason": f"InitContainer{term.get('reason') or 'Error'}"}
    return None


def finish_record(pod: Obj, now: datetime) -> Obj:
    """exitCode, reason and finishTime of a terminal pod."""
    term = _terminated(pod)
    status = pod.get("status") or {}
    record: Obj = {"finishTime": (term or {}).get("finishedAt") or times.fmt(now)}
    if term is not None and term.get("exitCode") is not None:
        record["exitCode"] = int(term["exitCode"])
    record["reason"] = (term or {}).get("reason") or status.get("reason") or status.get("phase")
    return record


def merge(recorded: list[Obj], pods: list[Obj], now: datetime) -> list[Obj]:
    """Recorded attempts updated with what the pods show; new pods added; vanished pods ended."""
    by_index: dict[int, Obj] = {}
    for rec in recorded:
        if isinstance(rec.get("index"), int):
            by_index[rec["index"]] = dict(rec)
    seen = set()
    for pod in pods:
        index = attempt_of(pod)
        if index is None:
            continue
        seen.add(index)
        rec = by_index.setdefault(
            index,
            {
                "index": index,
                "podName": pod["metadata"]["name"],
                "startTime": pod["metadata"].get("creationTimestamp") or times.fmt(now),
            },
        )
        if pod_terminal(pod) and "finishTime" not in rec:
            rec.update(finish_record(pod, now))
    for index, rec in by_index.items():
        if index not in seen and "finishTime" not in rec:
            rec.update({"finishTime": times.fmt(now), "reason": "PodDeleted"})
    return [by_index[i] for i in sorted(by_index)]


def compact(records: list[Obj], pods: Sequence[Obj] = ()) -> tuple[list[Obj], int]:
    """The records to keep (oldest first) and how many were dropped: the first, the last
    ATTEMPTS_KEPT_LAST, every unfinished one, every one whose pod still exists (`merge` would record it
    again) and every retryable failure (the backoff limit counts those) stay."""
    if len(records) <= c.ATTEMPTS_KEPT_LAST + 1:
        return records, 0
    present = {pod["metadata"]["name"] for pod in pods}
    keep = {0, *range(len(records) - c.ATTEMPTS_KEPT_LAST, len(records))}
    for i, rec in enumerate(records):
        if (
            "finishTime" not in rec
            or rec.get("podName") in present
            or classify(rec).outcome == RETRYABLE
        ):
            keep.add(i)
    kept = [rec for i, rec in enumerate(records) if i in keep]
    if len(kept) > c.ATTEMPTS_MAX_ITEMS:  # only with many leftover pods: the first and the newest
        kept = [kept[0], *kept[-(c.ATTEMPTS_MAX_ITEMS - 1) :]]
    return kept, len(records) - len(kept)


def vanished_hold(records: list[Obj], grace_seconds: int) -> datetime | None:
    """Until when the next attempt waits after the last one's pod vanished unseen (reason
    PodDeleted): a force-deleted pod's container may still run on its node for up to the pod's
    grace period, and two runners must never write one work dir at once."""
    last = records[-1] if records else None
    # A pod the operator stopped was seen terminating: the API server removed it once the
    # kubelet confirmed its end (a graceful deletion), so nothing of it runs any more.
    if last is None or last.get("reason") != "PodDeleted" or last.get("stopReason"):
        return None
    ended = times.parse(last.get("finishTime"))
    return ended + timedelta(seconds=grace_seconds) if ended is not None else None


def classify(rec: Obj) -> Classified:
    """What a finished attempt means (the contract's exit codes)."""
    code = rec.get("exitCode")
    if rec.get("stopReason") and code not in (ExitCode.OK, ExitCode.PARTIAL):
        return Classified(STOPPED)
    if code == ExitCode.OK:
        return Classified(SUCCEEDED)
    if code == ExitCode.PARTIAL:
        return Classified(PARTIAL)
    if code == ExitCode.FAILED:
        return Classified(TERMINAL, c.R_RUNNER_FAILED)
    if code == ExitCode.USAGE:
        return Classified(TERMINAL, c.R_INVALID_INPUT)
    if code == ExitCode.REFUSED:
        return Classified(TERMINAL, c.R_RESUME_REFUSED)
    # contract.RETRIED_EXIT_CODES, 128+N, a deleted pod, an eviction, anything unexpected:
    # retried, bounded.
    return Classified(RETRYABLE)


def describe_end(rec: Obj) -> str:
    """`exit code 137 (Error)` or `pod deleted`."""
    if rec.get("reason") == "PodDeleted":
        return "its pod was deleted"
    code = rec.get("exitCode")
    text = f"exit code {code}" if code is not None else "no exit code"
    if code is not None and code > contract.SIGNAL_EXIT_BASE:
        text += f" (killed by signal {code - contract.SIGNAL_EXIT_BASE})"
    if rec.get("reason"):
        text += f", {rec['reason']}"
    return text
