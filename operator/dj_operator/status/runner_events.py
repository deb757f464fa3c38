"""The runner's own events as Kubernetes Events on its job, aggregated: posted by the operator
from what the runner reports in ``status.progress`` (its counts), never one per partition.

- ``PartitionsFailed``: partitions failed after their retries. One Event object per attempt
  (its message names the attempt and the first failure, so it stays the same), posted when the
  attempt's count reaches 1, 2, 4, 8, ... (a power of two): the recorder raises its ``count``,
  so N failures make one object with a count of about log2(N).
- ``PartitionRetrying``: partition retries, likewise: one object per attempt, raised at 1, 2, 4,
  8, ... retries (``status.progress.retries`` has the count and the newest).
- ``CheckpointStale``: with ``progressDeadlineSeconds``, no checkpoint was committed for half of
  it (a warning before ``Stalled`` fails the job); once per stale checkpoint.

What was posted is remembered on the attempt (``status.attempts[].reported``), so a reconcile,
an operator restart or a resync never posts the same step twice. The recorder (``kube.py``)
deduplicates and rate-limits what is left. No I/O.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dj_operator.events_catalog import EventReason
from dj_operator.status import attempts as att
from dj_operator.status import times
from dj_operator.status.decide import EventDraft, Observed, runner_progress, stalled_since

Obj = dict[str, Any]


def crossed(old: int, new: int) -> bool:
    """Whether ``new`` reached a power of two that ``old`` had not (1, 2, 4, 8, ...)."""
    return new > old >= 0 and new.bit_length() > old.bit_length()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def runner_events(obs: Observed, records: list[Obj]) -> list[EventDraft]:
    """The Events the runner's report calls for; marks them reported on its attempt."""
    progress = runner_progress(obs.job)
    pod = progress.get("podName")
    rec = next((r for r in records if r.get("podName") == pod), None) if pod else None
    if rec is None:
        return []
    reported: Obj = dict(rec.get("reported") or {})
    out: list[EventDraft] = []
    index = rec.get("index")

    failed = _int(progress.get("partitionsFailed"))
    if crossed(_int(reported.get("partitionsFailed")), failed):
        error = progress.get("error") or {}
        first = ""
        if error.get("message"):
            where = f"partition {error.get('partition')}" + (
                f", op {error['op']}" if error.get("op") else ""
            )
            first = f"; the first: {where}: {error['message']}"
        out.append(
            EventDraft(
                EventReason.PartitionsFailed,
                f"runner attempt {index}: partitions failed after their retries{first}"
                " (status.progress.partitionsFailed counts them)",
            )
        )
    if failed:
        reported["partitionsFailed"] = failed

    retries = progress.get("retries") or {}
    count = _int(retries.get("count"))
    if crossed(_int(reported.get("retries")), count):
        out.append(
            EventDraft(
                EventReason.PartitionRetrying,
                f"runner attempt {index} retries partitions after errors"
                " (status.progress.retries counts them and names the newest)",
            )
        )
    if count:
        reported["retries"] = count

    stale = _stale(obs, records, rec, reported)
    if stale is not None:
        out.append(stale)
    if reported:
        rec["reported"] = reported
    return out


def _stale(obs: Observed, records: list[Obj], rec: Obj, reported: Obj) -> EventDraft | None:
    spec = obs.spec
    deadline = spec.progress_deadline_seconds if spec is not None else None
    if not deadline or "finishTime" in rec or rec is not records[-1] or spec.suspend:
        return None
    running = any(
        att.attempt_of(p) == rec.get("index") and (p.get("status") or {}).get("phase") == "Running"
        for p in obs.pods
    )
    since = stalled_since(obs, records)
    if not running or since is None or obs.now - since <= timedelta(seconds=deadline / 2):
        return None
    mark = times.fmt(since)
    if reported.get("staleSince") == mark:
        return None
    reported["staleSince"] = mark
    age = int((obs.now - since).total_seconds())
    fails_at = times.fmt(since + timedelta(seconds=deadline))
    return EventDraft(
        EventReason.CheckpointStale,
        f"runner attempt {rec.get('index')}: no checkpoint committed for {age} s (since {mark});"
        f" progressDeadlineSeconds ({deadline} s) fails the job at {fails_at}",
    )
