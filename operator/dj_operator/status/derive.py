"""The state machine: recomputed on every reconcile from what is observed, never from edges.

`derive(Observed) -> Outcome`: the operator-owned status fields (everything but `progress`, which
the runner writes), the actions that bring the children to what the phase needs, and the Events of
the transitions. The phase, the failure and the actions are decided by `dj_operator.status.decide`;
this module writes them into the status (conditions, restarts, children, rayCluster) and adds the
Events of the phase change. No I/O: the handler observes, calls this, acts, then writes the status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dj_operator.api import constants as c
from dj_operator.build import children, names
from dj_operator.events_catalog import EventReason
from dj_operator.events_catalog import reason as event_reason
from dj_operator.status import attempts as att
from dj_operator.status import timeline, times
from dj_operator.status.decide import (
    Action,
    Draft,
    EventDraft,
    Observed,
    decide,
    remove_lost_ray_pods,
    runner_progress,
    stop_active,
    suspended_time,
)
from dj_operator.status.runner_events import runner_events

Obj = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """A reconcile's result: the status to write, the actions to take, the Events to post."""

    status: Obj
    actions: tuple[Action, ...]
    events: tuple[EventDraft, ...]

    @property
    def phase(self) -> str:
        return self.status["phase"]


def _condition(
    previous: dict[str, Obj], ctype: str, status: str, reason: str, message: str, obs: Observed
) -> Obj:
    old = previous.get(ctype) or {}
    transition = old.get("lastTransitionTime") if old.get("status") == status else None
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:4000],
        "lastTransitionTime": transition or times.fmt(obs.now),
        "observedGeneration": obs.job["metadata"].get("generation", 0),
    }


def derive(obs: Observed) -> Outcome:
    job = obs.job
    meta = job["metadata"]
    previous = job.get("status") or {}
    prev_phase = previous.get("phase")
    records = att.merge(list(previous.get("attempts") or []), obs.pods, obs.now)
    spec = obs.spec
    if spec is not None and spec.suspend:
        # A runner that ended while the job is suspended was stopped for it, even when the
        # operator died between deleting the pod and recording why.
        was_done = {r.get("index") for r in previous.get("attempts") or [] if "finishTime" in r}
        for rec in records:
            if (
                "finishTime" in rec
                and rec["index"] not in was_done
                and att.classify(rec).outcome == att.RETRYABLE
            ):
                rec["stopReason"] = "Suspended"
    draft = decide(obs, records, prev_phase, previous)
    if spec is not None:
        _hold_after_vanished_pod(obs, records, draft, children.runner_termination_grace(spec))

    # Counted restarts: retryable failures that were retried (a final one that exceeded the
    # limit is not a restart).
    failures = sum(
        1 for r in records if "finishTime" in r and att.classify(r).outcome == att.RETRYABLE
    )
    limit = spec.backoff_limit if spec else 0
    restarts = min(failures, limit)

    # Terminal phases keep no pods running and no cluster.
    if draft.phase in c.TERMINAL_PHASES:
        stop = stop_active(obs, records, draft.reason or draft.phase)
        if stop:
            draft.actions.append(stop)
        if obs.ray_cluster is not None:
            draft.actions.append(Action("delete-ray"))
        else:
            remove_lost_ray_pods(obs, draft, "the job is finished")

    kept, dropped = att.compact(records, obs.pods)
    status: Obj = {
        "phase": draft.phase,
        "observedGeneration": meta.get("generation", 0),
        "attempts": kept,
        "restarts": restarts,
    }
    omitted = int(previous.get("attemptsOmitted") or 0) + dropped
    if omitted:
        status["attemptsOmitted"] = omitted
    start = previous.get("startTime")
    if start is None and (
        records or any(a.kind in ("create-pod", "create-ray") for a in draft.actions)
    ):
        start = records[0]["startTime"] if records else times.fmt(obs.now)
    if start:
        status["startTime"] = start
    if draft.phase in c.TERMINAL_PHASES:
        status["completionTime"] = previous.get("completionTime") or times.fmt(obs.now)
        if draft.failure is None and prev_phase == draft.phase:
            draft.failure = previous.get("failure")
    if draft.failure:
        status["failure"] = draft.failure
    else:
        status["failure"] = None
    if obs.work_dir:
        status["workDir"] = obs.work_dir
    if obs.output_path:
        status["outputPath"] = obs.output_path
    if obs.recipe_hash and draft.phase not in c.TERMINAL_PHASES:
        status["recipeHash"] = obs.recipe_hash
    elif previous.get("recipeHash"):
        status["recipeHash"] = previous["recipeHash"]
    kids: Obj = {}
    if spec is not None:
        kids["configMap"] = names.config_map(meta["name"])
        claim = children.claim_name(job, spec)
        if claim is not None:
            kids["claim"] = claim
        kids["serviceAccount"] = children.runner_service_account(job, spec)
        if spec.ray.mode == c.MODE_KUBERAY:
            kids["rayCluster"] = names.ray_cluster(meta["name"])
            kids["rayServiceAccount"] = children.ray_pod_service_account(job, spec)
        if obs.network_policy:
            kids["networkPolicy"] = obs.network_policy
    if records:
        kids["runnerPod"] = records[-1]["podName"]
    for action in draft.actions:
        if action.kind == "create-pod" and action.attempt is not None:
            kids["runnerPod"] = names.runner_pod(meta["name"], action.attempt)
    status["children"] = kids
    status["rayCluster"] = ray_cluster_status(obs.ray_cluster)
    status["timeline"] = (
        timeline.record(
            previous.get("timeline"),
            spec.ray.mode if spec is not None else c.MODE_LOCAL,
            records,
            runner_progress(job),
            obs.ray_cluster,
            draft.cluster_ready is not None and draft.cluster_ready[0] == "True",
            obs.now,
        )
        or None
    )
    status["createBackoff"] = draft.create_backoff
    _suspension(status, obs, previous)
    status["conditions"] = _conditions(obs, draft, previous)

    events = list(draft.events)
    events.extend(_blocked_events(draft, previous))
    if draft.spec_invalid and _prev_status(previous, c.COND_VALID) != "False":
        events.append(EventDraft(EventReason.InvalidSpec, draft.message))
    if prev_phase != draft.phase:
        events.extend(_phase_events(draft, records))
    events.extend(_resume_events(obs, previous))
    record_resumed(status, job)
    events.extend(runner_events(obs, records))
    return Outcome(status=status, actions=tuple(draft.actions), events=tuple(events))


def _suspension(status: Obj, obs: Observed, previous: Obj) -> None:
    """`status.suspendedSince` while spec.suspend holds after the job started; its time is
    added to `status.suspendedSeconds` when the job resumes (activeDeadlineSeconds does not
    count it)."""
    suspended = (
        obs.spec is not None and obs.spec.suspend and status["phase"] not in c.TERMINAL_PHASES
    )
    if suspended and status.get("startTime"):
        status["suspendedSince"] = previous.get("suspendedSince") or times.fmt(obs.now)
        if previous.get("suspendedSeconds"):
            status["suspendedSeconds"] = previous["suspendedSeconds"]
        return
    status["suspendedSince"] = None
    paused = int(suspended_time(previous, obs.now).total_seconds())
    if paused:
        status["suspendedSeconds"] = paused


#: The Events of a new attempt, held back with it.
_ATTEMPT_EVENTS = (EventReason.Started, EventReason.Retrying, EventReason.Resuming)


def _hold_after_vanished_pod(obs: Observed, records: list[Obj], draft: Draft, grace: int) -> None:
    """No new attempt before the vanished pod's grace period has passed (see
    `attempts.vanished_hold`); a timer wakes the job then (`wakeup`)."""
    hold = att.vanished_hold(records, grace)
    if hold is None or obs.now >= hold or not any(a.kind == "create-pod" for a in draft.actions):
        return
    draft.actions[:] = [a for a in draft.actions if a.kind != "create-pod"]
    draft.events[:] = [e for e in draft.events if e.reason not in _ATTEMPT_EVENTS]
    draft.reason = "WaitingForVanishedRunner"
    draft.message = (
        f"runner pod {records[-1].get('podName')} was deleted before it was seen ending; its"
        f" container may still run for its grace period ({grace} s): the next attempt starts at"
        f" {times.fmt(hold)}"
    )


def ray_cluster_status(cluster: Obj | None) -> Obj | None:
    """`status.rayCluster`: the owned RayCluster as KubeRay reports it (None when there is none,
    which removes the field).

    - `state`: KubeRay's `status.state` (`ready`, `suspended`, `failed`), `pending` until KubeRay
      reports one. KubeRay keeps `ready` after the head pod dies: `headReady` (its condition
      `HeadPodReady`) says whether the head runs.
    - `readyWorkers`, `desiredWorkers`: KubeRay's `readyWorkerReplicas` and
      `desiredWorkerReplicas`. KubeRay omits a count that is 0; before it has reported at all,
      the desired count is computed from the worker groups as KubeRay computes it
      (`replicas` within `minReplicas`..`maxReplicas`, times `numOfHosts`; suspended groups 0).
    - `workers`: `<ready>/<desired>`, the `Workers` column of `kubectl get djjob`.
    """
    if cluster is None:
        return None
    status = cluster.get("status") or {}
    conditions = {cond.get("type"): cond.get("status") for cond in status.get("conditions") or []}
    reported = any(
        key in status for key in ("state", "conditions", "observedGeneration", "lastUpdateTime")
    )
    if reported or "desiredWorkerReplicas" in status:
        desired = int(status.get("desiredWorkerReplicas") or 0)
    else:
        groups = (cluster.get("spec") or {}).get("workerGroupSpecs") or []
        desired = sum(_group_desired_workers(group) for group in groups)
    ready = int(status.get("readyWorkerReplicas") or 0)
    return {
        "name": cluster["metadata"]["name"],
        "state": status.get("state") or "pending",
        "headReady": conditions.get("HeadPodReady") == "True",
        "readyWorkers": ready,
        "desiredWorkers": desired,
        "workers": f"{ready}/{desired}",
    }


def _group_desired_workers(group: Obj) -> int:
    """KubeRay's desired worker pods of one group (`GetWorkerGroupDesiredReplicas`): 0 when the
    group is suspended, else `replicas` kept within `minReplicas`..`maxReplicas`, times
    `numOfHosts`."""
    if group.get("suspend"):
        return 0
    low = int(group.get("minReplicas") or 0)
    high = int(group["maxReplicas"]) if group.get("maxReplicas") is not None else None
    replicas = int(group["replicas"]) if group.get("replicas") is not None else low
    if high is not None and low > high:
        replicas = high
    elif replicas < low:
        replicas = low
    elif high is not None and replicas > high:
        replicas = high
    return replicas * int(group.get("numOfHosts") or 1)


def _conditions(obs: Observed, draft: Draft, previous: Obj) -> list[Obj]:
    old = {cond.get("type"): cond for cond in previous.get("conditions") or []}
    phase = draft.phase
    failure = draft.failure or {}
    out = []

    def add(ctype: str, ok: bool, reason: str, message: str) -> None:
        out.append(_condition(old, ctype, "True" if ok else "False", reason, message, obs))

    invalid = failure.get("reason") == c.R_INVALID_SPEC or draft.spec_invalid is not None
    add(
        c.COND_VALID,
        not invalid,
        c.R_INVALID_SPEC if invalid else "Valid",
        (draft.spec_invalid or failure.get("message", ""))
        if invalid
        else "the spec and the recipe are valid",
    )
    if obs.spec is not None and obs.spec.ray.mode == c.MODE_KUBERAY:
        if draft.cluster_ready is not None:
            status, reason, message = draft.cluster_ready
        elif phase in c.TERMINAL_PHASES or phase == c.SUSPENDED:
            status, reason, message = "False", "Released", "the RayCluster is removed"
        else:
            status, reason, message = "False", "NotReady", "no RayCluster yet"
        out.append(_condition(old, c.COND_CLUSTER_READY, status, reason, message, obs))
    add(c.COND_RUNNING, phase == c.RUNNING, draft.reason or phase, draft.message or phase)
    add(
        c.COND_SUSPENDED,
        phase == c.SUSPENDED,
        draft.reason if obs.spec is not None and obs.spec.suspend else "NotSuspended",
        draft.message if obs.spec is not None and obs.spec.suspend else "spec.suspend is false",
    )
    add(
        c.COND_SUCCEEDED,
        phase == c.SUCCEEDED,
        phase if phase in c.TERMINAL_PHASES else "NotFinished",
        draft.message if phase in c.TERMINAL_PHASES else "the job has not finished",
    )
    add(
        c.COND_FAILED,
        phase == c.FAILED,
        failure.get("reason", "NotFailed") if phase == c.FAILED else "NotFailed",
        failure.get("message", "") if phase == c.FAILED else "the job has not failed",
    )
    add(
        c.COND_FINISHED,
        phase in c.TERMINAL_PHASES,
        phase if phase in c.TERMINAL_PHASES else "NotFinished",
        draft.message if phase in c.TERMINAL_PHASES else "the job has not finished",
    )
    blocked = draft.blocked
    add(
        c.COND_BLOCKED,
        blocked is not None,
        blocked.reason if blocked else "NotBlocked",
        blocked.message if blocked else "nothing is known to keep the job's pods from starting",
    )
    return out


def _prev_status(previous: Obj, ctype: str) -> str | None:
    for cond in previous.get("conditions") or []:
        if cond.get("type") == ctype:
            return cond.get("status")
    return None


def _blocked_events(draft: Draft, previous: Obj) -> list[EventDraft]:
    """`PodBlocked` when a pod becomes blocked or is blocked for another reason (not on every
    reconcile: the Blocked condition remembers what was posted). A forbidden create posts its
    own `CreateForbidden` with each refusal."""
    blocked = draft.blocked
    if blocked is None or blocked.reason == c.B_CREATE_FORBIDDEN:
        return []
    old = next((x for x in previous.get("conditions") or [] if x.get("type") == c.COND_BLOCKED), {})
    if old.get("status") == "True" and old.get("reason") == blocked.reason:
        return []
    return [EventDraft(EventReason.PodBlocked, blocked.message)]


def _phase_events(draft: Draft, records: list[Obj]) -> list[EventDraft]:
    phase = draft.phase
    if phase == c.SUCCEEDED:
        message = f"the runner succeeded after {records[-1]['index'] if records else 0} attempt(s)"
        return [EventDraft(EventReason.Succeeded, message)]
    if phase == c.PARTIALLY_SUCCEEDED:
        return [EventDraft(EventReason.PartiallySucceeded, draft.message)]
    if phase == c.FAILED:
        # Every failure reason is a catalog entry of its own name (a test holds them equal).
        assert draft.failure is not None
        return [EventDraft(event_reason(draft.failure["reason"]), draft.message)]
    if phase == c.SUSPENDED:
        message = "the runner is stopped; the volume is kept"
        return [EventDraft(EventReason.Suspended, message)]
    return []


def _resume_events(obs: Observed, previous: Obj) -> list[EventDraft]:
    """`Resumed` once per attempt whose runner reported that it restored checkpoints."""
    progress = runner_progress(obs.job)
    restored = progress.get("resumedPartitions")
    checkpoints = progress.get("resumedCheckpoints")
    pod = progress.get("podName")
    if restored is None and checkpoints is None:
        return []
    recorded = {r.get("podName"): r for r in previous.get("attempts") or [] if r.get("resumedFrom")}
    if not pod or pod in recorded:
        return []
    point = (progress.get("checkpoint") or {}).get("summary")
    where = f"; it starts from {point}" if point else ""
    return [
        EventDraft(
            EventReason.Resumed,
            f"runner pod {pod} resumed from the work dir: {restored or 0} partitions done,"
            f" {checkpoints or 0} checkpoints restored{where}",
        )
    ]


def record_resumed(status: Obj, job: Obj) -> None:
    """Copy the runner's `resumed` report onto its attempt (so Resumed is posted once)."""
    progress = runner_progress(job)
    pod = progress.get("podName")
    if pod is None or (
        progress.get("resumedPartitions") is None and progress.get("resumedCheckpoints") is None
    ):
        return
    for rec in status.get("attempts") or []:
        if rec.get("podName") == pod and not rec.get("resumedFrom"):
            rec["resumedFrom"] = {
                "partitionsDone": int(progress.get("resumedPartitions") or 0),
                "checkpoints": int(progress.get("resumedCheckpoints") or 0),
            }
