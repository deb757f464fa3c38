"""When a job next needs a reconcile that no watch event will bring: its time-based rules.

Reconciles are driven by watch events (the job, its pods, its RayCluster). What changes with the
clock alone is listed here, so that a job is woken exactly when a rule can decide differently:

- `activeDeadlineSeconds` after `startTime`, plus the time spent suspended (not while suspended);
- `progressDeadlineSeconds` after the last sign of progress, while a runner pod is active, and
  half of it (the `CheckpointStale` Event);
- `startupDeadlineSeconds` after a waiting runner pod's creation, or after the `Blocked`
  condition turned true;
- `status.createBackoff.retryTime`, the next create after a forbidden one;
- `ray.readyTimeoutSeconds` after the RayCluster's creation, while it is not ready;
- `ttlSecondsAfterFinished` after `completionTime`, once the job finished;
- a deleted runner pod's `deletionTimestamp` plus `LOST_POD_MARGIN_SECONDS`, when a pod no
  kubelet ends (its node is lost) is removed (`decide.lost_after`);
- the runner pod's grace period after its pod vanished unseen (`attempts.vanished_hold`), before
  the next attempt may start;
- every `RECIPE_SOURCE_POLL` while the `recipeFrom` ConfigMap (or its key) is missing: the
  operator does not watch ConfigMaps, so it looks again (one GET) until the recipe is there;
- every `RAY_PODS_POLL` while a RayCluster is not ready: its pods are KubeRay's and not watched
  (they carry no label of the operator's), so a head or worker that cannot start (`Blocked`) is
  seen within that time;
- a finished or suspended job's Ray pods left after its RayCluster was deleted: each one's
  `lost_after` once it is being deleted (one on a lost node is then removed), else every
  `RAY_PODS_POLL` until the garbage collector deletes it.

A suspended job and a finished job without a TTL and without Ray pods left have nothing pending:
they cost nothing until an event arrives. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from dj_operator.api import constants as c
from dj_operator.build import children
from dj_operator.status import attempts as att
from dj_operator.status import times
from dj_operator.status.decide import Observed, lost_after, stalled_since, suspended_time

Obj = dict[str, Any]

#: Woken this long after a deadline, so that the rule (`now - start > deadline`) has passed.
MARGIN = timedelta(seconds=1)
#: How often a job waiting for its recipe's ConfigMap looks for it again.
RECIPE_SOURCE_POLL = timedelta(seconds=5)
#: How often a job whose RayCluster is not ready looks at the cluster's pods again.
RAY_PODS_POLL = timedelta(seconds=5)


def settled(job: Mapping[str, Any]) -> bool:
    """Finished or Suspended, and the current generation is the one reconciled: nothing but a
    spec change (a new generation), a pod or RayCluster event, or the TTL wakes such a job."""
    status = job.get("status") or {}
    meta = job.get("metadata") or {}
    return (
        status.get("phase") in (*c.TERMINAL_PHASES, c.SUSPENDED)
        and status.get("observedGeneration") == meta.get("generation")
        and not meta.get("deletionTimestamp")
    )


def ray_pod_wakes(event_type: str | None, pod: Mapping[str, Any], job_settled: bool) -> bool:
    """Whether a watch event of a Ray pod wakes its job. Only a pod being deleted does (its
    RayCluster is gone or going, and on a lost node no kubelet ends it): in kopf's start-up
    listing (`event_type` None) whatever the job's state, since the job's own listing may come
    later; afterwards only for a settled job, which nothing else wakes (a live job's Ray pods are
    its RayCluster's, whose watch and the job's timers cover them). So a job that finished or
    was suspended while no operator ran, or before its operator removed its lost Ray pods,
    still has them removed (`_ray_pods_left`)."""
    if event_type == "DELETED" or not (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return event_type is None or job_settled


def ttl_due(job: Mapping[str, Any]) -> datetime | None:
    """When a finished job is to be deleted (`ttlSecondsAfterFinished` after completionTime)."""
    status = job.get("status") or {}
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    done = times.parse(status.get("completionTime"))
    if status.get("phase") not in c.TERMINAL_PHASES or done is None or not isinstance(ttl, int):
        return None
    return _add(done, ttl)


def next_check(obs: Observed, status: Obj) -> datetime | None:
    """The earliest instant a time-based rule may change the outcome of the reconcile that
    wrote `status` (None: nothing is pending)."""
    spec = obs.spec
    phase = status.get("phase")
    if phase in c.TERMINAL_PHASES:
        return _earliest(
            [ttl_due({"spec": obs.job.get("spec"), "status": status}), *_ray_pods_left(obs)]
        )
    if spec is None or spec.suspend:
        return _earliest(_ray_pods_left(obs))
    due: list[datetime | None] = []
    if obs.recipe_source_missing:
        due.append(obs.now + RECIPE_SOURCE_POLL)
    started = times.parse(status.get("startTime"))
    if spec.active_deadline_seconds and started is not None:
        paused = int(suspended_time(status, obs.now).total_seconds())
        due.append(_add(started, spec.active_deadline_seconds + paused))
    active = [p for p in obs.pods if att.pod_active(p)]
    if spec.progress_deadline_seconds and active:
        since = stalled_since(obs, status.get("attempts") or [])
        if since is not None:
            half = _add(since, spec.progress_deadline_seconds // 2)
            if half is not None and half > obs.now:  # the CheckpointStale Event, once
                due.append(half)
            due.append(_add(since, spec.progress_deadline_seconds))
    for pod in active:
        lost = lost_after(pod)
        if lost is not None:
            due.append(lost + MARGIN)
    if spec.startup_deadline_seconds:
        for pod in active:
            if (pod.get("status") or {}).get("phase") != "Running":
                created = times.parse(pod["metadata"].get("creationTimestamp"))
                if created is not None:
                    due.append(_add(created, spec.startup_deadline_seconds))
        blocked = next(
            (x for x in status.get("conditions") or [] if x.get("type") == c.COND_BLOCKED), {}
        )
        since_blocked = times.parse(blocked.get("lastTransitionTime"))
        if blocked.get("status") == "True" and since_blocked is not None:
            due.append(_add(since_blocked, spec.startup_deadline_seconds))
    retry = times.parse((status.get("createBackoff") or {}).get("retryTime"))
    if retry is not None and retry > obs.now:
        due.append(retry + MARGIN)
    if not active:
        hold = att.vanished_hold(
            status.get("attempts") or [], children.runner_termination_grace(spec)
        )
        if hold is not None and hold > obs.now:
            due.append(hold + MARGIN)
    cluster = obs.ray_cluster
    if spec.ray.mode == c.MODE_KUBERAY and cluster and not children.ray_cluster_ready(cluster):
        created = times.parse(cluster["metadata"].get("creationTimestamp"))
        if created is not None:
            due.append(_add(created, spec.ray.ready_timeout_seconds))
        due.append(obs.now + RAY_PODS_POLL)
    return _earliest(due)


def _ray_pods_left(obs: Observed) -> list[datetime | None]:
    """A finished or suspended job whose RayCluster is gone but some of its pods are not (the
    garbage collector deletes them; on a lost node no kubelet ends them): each one's
    `lost_after`, or the next look while it is not yet being deleted."""
    if obs.ray_cluster is not None:
        return []  # its deletion's watch event comes
    due: list[datetime | None] = []
    for pod in obs.ray_pods:
        lost = lost_after(pod)
        due.append(lost + MARGIN if lost is not None else obs.now + RAY_PODS_POLL)
    return due


def _earliest(due: list[datetime | None]) -> datetime | None:
    found = [d for d in due if d is not None]
    return min(found) if found else None


def _add(start: datetime, seconds: int) -> datetime | None:
    """`start + seconds + MARGIN`, or None past the calendar (a deadline of 10**15 s)."""
    try:
        return start + timedelta(seconds=seconds) + MARGIN
    except OverflowError:
        return None
