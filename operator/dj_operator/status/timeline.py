"""A job's startup milestones and the intervals between them (the phase-duration SLIs).

Five milestones, each read from an observed fact and never from an edge:

- ``apply``: the job's ``metadata.creationTimestamp``;
- ``podCreated``: the first runner pod's ``creationTimestamp`` (the first attempt's
  ``startTime``; compaction always keeps the first attempt);
- ``rayReady``: kuberay mode, when the RayCluster was first seen ready (KubeRay's
  ``status.stateTransitionTimes.ready`` where it reports one, else the reconcile that saw it);
  local mode, the runner's ``status.progress.engineReadyTime`` (its embedded Ray started, or Ray
  skipped for local worker processes);
- ``firstCheckpoint``: the first checkpoint commit the runner reports
  (``status.progress.lastCheckpointTime``, else ``checkpoint.time``);
- ``finished``: ``status.completionTime``.

``apply`` and ``finished`` are fields of their own already; the other three are recorded in
``status.timeline`` by ``record``, each once: a recorded milestone is never moved, so a restarted
operator reads the same facts. ``intervals(mode, milestones)`` are the seconds between consecutive
milestones in the order the mode reaches them (a kuberay job's runner pod is made once its
cluster is ready; a local-mode runner starts its own Ray), and ``new_intervals`` those that a
status change completed: the metrics observe each once, when its end is newly recorded. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from itertools import pairwise
from typing import Any

from dj_operator.api import constants as c
from dj_operator.status import times

Obj = dict[str, Any]

APPLY = "apply"
POD_CREATED = "podCreated"
RAY_READY = "rayReady"
FIRST_CHECKPOINT = "firstCheckpoint"
FINISHED = "finished"

#: The milestones ``status.timeline`` records (the others have fields of their own).
RECORDED = (POD_CREATED, RAY_READY, FIRST_CHECKPOINT)

#: The order each mode reaches the milestones in (external mode: as local, its Ray is the
#: runner's to join).
ORDER: dict[str, tuple[str, ...]] = {
    c.MODE_LOCAL: (APPLY, POD_CREATED, RAY_READY, FIRST_CHECKPOINT, FINISHED),
    c.MODE_KUBERAY: (APPLY, RAY_READY, POD_CREATED, FIRST_CHECKPOINT, FINISHED),
    c.MODE_EXTERNAL: (APPLY, POD_CREATED, RAY_READY, FIRST_CHECKPOINT, FINISHED),
}

_LABEL = {
    APPLY: "apply",
    POD_CREATED: "pod_created",
    RAY_READY: "ray_ready",
    FIRST_CHECKPOINT: "first_checkpoint",
    FINISHED: "finished",
}


def interval_name(start: str, end: str) -> str:
    """The metrics' ``interval`` label: ``apply_to_pod_created``, ..."""
    return f"{_LABEL[start]}_to_{_LABEL[end]}"


def mode_intervals(mode: str) -> tuple[str, ...]:
    """The ``interval`` label values of a mode, in order."""
    order = ORDER.get(mode, ORDER[c.MODE_LOCAL])
    return tuple(interval_name(a, b) for a, b in pairwise(order))


#: Every ``interval`` label value (bounded: seven).
INTERVALS: tuple[str, ...] = tuple(
    dict.fromkeys(name for mode in ORDER for name in mode_intervals(mode))
)


def _first_time(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and times.parse(value) is not None:
            return value
    return None


def record(
    previous: Mapping[str, Any] | None,
    mode: str,
    records: list[Obj],
    progress: Mapping[str, Any],
    ray_cluster: Obj | None,
    cluster_ready: bool,
    now: datetime,
) -> Obj:
    """``status.timeline``: the recorded milestones kept as they are, the newly observed added.

    ``records`` are the merged runner attempts (oldest first), ``progress`` the runner's
    ``status.progress``, ``cluster_ready`` whether this reconcile found the RayCluster ready."""
    out: Obj = {k: v for k, v in (previous or {}).items() if k in RECORDED and v}
    if POD_CREATED not in out and records:
        out[POD_CREATED] = _first_time(records[0].get("startTime"))
    if RAY_READY not in out:
        if mode == c.MODE_KUBERAY:
            if cluster_ready and ray_cluster is not None:
                moved = ((ray_cluster.get("status") or {}).get("stateTransitionTimes")) or {}
                out[RAY_READY] = _first_time(moved.get("ready")) or times.fmt(now)
        else:
            out[RAY_READY] = _first_time(progress.get("engineReadyTime"))
    if FIRST_CHECKPOINT not in out:
        point = progress.get("checkpoint") or {}
        out[FIRST_CHECKPOINT] = _first_time(
            progress.get("lastCheckpointTime"),
            point.get("time") if isinstance(point, Mapping) else None,
        )
    return {k: out[k] for k in RECORDED if out.get(k)}


def milestones(body: Mapping[str, Any]) -> dict[str, float]:
    """The milestones a job body shows, as Unix seconds (absent: not reached or unknown)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    recorded = status.get("timeline") or {}
    texts = {
        APPLY: meta.get("creationTimestamp"),
        **{k: recorded.get(k) for k in RECORDED if isinstance(recorded, Mapping)},
        FINISHED: status.get("completionTime"),
    }
    out = {}
    for key, text in texts.items():
        moment = times.parse(text) if isinstance(text, str) else None
        if moment is not None:
            out[key] = moment.timestamp()
    return out


def intervals(mode: str, points: Mapping[str, float]) -> dict[str, float]:
    """Seconds between consecutive milestones the job reached, by ``interval`` label (never
    negative: the runner's clock and the API server's may differ a little)."""
    order = ORDER.get(mode, ORDER[c.MODE_LOCAL])
    return {
        interval_name(a, b): max(0.0, points[b] - points[a])
        for a, b in pairwise(order)
        if a in points and b in points
    }


def new_intervals(
    mode: str, before: Mapping[str, float], after: Mapping[str, float]
) -> dict[str, float]:
    """The intervals ``after`` has and ``before`` had not: each is observed once."""
    old = intervals(mode, before)
    return {k: v for k, v in intervals(mode, after).items() if k not in old}
