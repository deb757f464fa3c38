"""The state machine: recomputed on every reconcile from what is observed, never from edges.

`derive(Observed) -> Outcome`: the operator-owned status fields (everything but `progress`, which
the runner writes), the actions that bring the children to what the phase needs, and the Events of
the transitions. No I/O: the handler observes, calls this, acts, then writes the status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dj_operator.api import constants as c
from dj_operator.api.types import JobSpec, SpecError
from dj_operator.build import children, names
from dj_operator.status import attempts as att
from dj_operator.status import times

Obj = dict[str, Any]


@dataclass(frozen=True)
class Observed:
    job: Obj
    spec: JobSpec | None
    spec_error: SpecError | None
    pods: list[Obj]
    now: datetime
    work_dir: str | None = None
    output_path: str | None = None
    ray_cluster: Obj | None = None
    recipe_source_missing: str | None = None  # why the recipe ConfigMap cannot be read
    log_tails: dict[str, str] = field(default_factory=dict)
    network_policy: str | None = None  # the job's NetworkPolicy, unless the policy turns it off


@dataclass(frozen=True)
class Action:
    kind: str  # ensure-children | create-pod | delete-pods | create-ray | delete-ray | delete-job
    attempt: int | None = None
    pods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    status: Obj
    actions: tuple[Action, ...]
    events: tuple[Event, ...]

    @property
    def phase(self) -> str:
        return self.status["phase"]


@dataclass
class _Draft:
    phase: str
    failure: Obj | None = None
    cluster_ready: tuple[str, str, str] | None = None  # status, reason, message
    reason: str = ""
    message: str = ""
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _progress(job: Obj) -> Obj:
    return (job.get("status") or {}).get("progress") or {}


def _failure_from_attempt(obs: Observed, rec: Obj, reason: str, message: str) -> Obj:
    failure: Obj = {
        "reason": reason,
        "component": "runner",
        "message": message,
        "podName": rec.get("podName"),
        "attempt": rec.get("index"),
    }
    if rec.get("exitCode") is not None:
        failure["exitCode"] = rec["exitCode"]
    error = _progress(obs.job).get("error") or {}
    if error.get("op"):
        failure["op"] = error["op"]
    if isinstance(error.get("partition"), int):
        failure["partition"] = error["partition"]
    tail = obs.log_tails.get(rec.get("podName") or "")
    if tail:
        failure["logTail"] = tail[-4000:]
    return {k: v for k, v in failure.items() if v is not None}


def _runner_message(obs: Observed, rec: Obj) -> str:
    """The runner's own words: its last `error:` line, else its recorded error, else the end."""
    tail = obs.log_tails.get(rec.get("podName") or "", "")
    for line in reversed(tail.splitlines()):
        stripped = line.strip()
        if stripped.startswith("error:") or " failed: " in stripped:
            return stripped
    error = _progress(obs.job).get("error") or {}
    if error.get("message"):
        return str(error["message"])
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else f"the runner ended with {att.describe_end(rec)}"


_TERMINAL_MESSAGES = {
    c.R_RUNNER_FAILED: "the runner failed (partitions failed beyond the recipe's limit)",
    c.R_INVALID_INPUT: "the runner refused its input",
    c.R_RESUME_REFUSED: "the runner refused to resume the work dir",
}


def _stop_active(obs: Observed, records: list[Obj], reason: str) -> Action | None:
    """Mark the active attempts stopped by the operator and ask for their pods' deletion."""
    active = [
        p for p in obs.pods if att.pod_active(p) and not p["metadata"].get("deletionTimestamp")
    ]
    stopping = {p["metadata"]["name"] for p in obs.pods if att.pod_active(p)}
    for rec in records:
        if rec.get("podName") in stopping and "finishTime" not in rec:
            rec.setdefault("stopReason", reason)
    if not active:
        return None
    return Action("delete-pods", pods=tuple(sorted(p["metadata"]["name"] for p in active)))


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
    draft = _decide(obs, records, prev_phase, previous)

    # Counted restarts: retryable failures that were retried (a final one that exceeded the
    # limit is not a restart).
    failures = sum(
        1 for r in records if "finishTime" in r and att.classify(r).outcome == att.RETRYABLE
    )
    limit = spec.backoff_limit if spec else 0
    restarts = min(failures, limit)

    # Terminal phases keep no pods running and no cluster.
    if draft.phase in c.TERMINAL_PHASES:
        stop = _stop_active(obs, records, draft.reason or draft.phase)
        if stop:
            draft.actions.append(stop)
        if obs.ray_cluster is not None:
            draft.actions.append(Action("delete-ray"))

    status: Obj = {
        "phase": draft.phase,
        "observedGeneration": meta.get("generation", 0),
        "attempts": records,
        "restarts": restarts,
    }
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
    kids: Obj = {}
    if spec is not None:
        kids["configMap"] = names.config_map(meta["name"])
        kids["claim"] = children.claim_name(job, spec)
        kids["serviceAccount"] = names.service_account(meta["name"])
        if spec.ray.mode == c.MODE_KUBERAY:
            kids["rayCluster"] = names.ray_cluster(meta["name"])
            kids["rayServiceAccount"] = names.ray_service_account(meta["name"])
        if obs.network_policy:
            kids["networkPolicy"] = obs.network_policy
    if records:
        kids["runnerPod"] = records[-1]["podName"]
    for action in draft.actions:
        if action.kind == "create-pod" and action.attempt is not None:
            kids["runnerPod"] = names.runner_pod(meta["name"], action.attempt)
    status["children"] = kids
    status["rayCluster"] = ray_cluster_status(obs.ray_cluster)
    status["conditions"] = _conditions(obs, draft, previous)

    events = list(draft.events)
    if prev_phase != draft.phase:
        events.extend(_phase_events(draft, records))
    events.extend(_resume_events(obs, previous))
    record_resumed(status, job)
    return Outcome(status=status, actions=tuple(draft.actions), events=tuple(events))


def _decide(obs: Observed, records: list[Obj], prev_phase: str | None, previous: Obj) -> _Draft:
    spec = obs.spec
    if obs.spec_error is not None or spec is None:
        err = obs.spec_error
        message = str(err) if err else "the spec could not be read"
        return _Draft(
            c.FAILED,
            failure={"reason": c.R_INVALID_SPEC, "component": "validation", "message": message},
            reason=c.R_INVALID_SPEC,
            message=message,
        )
    if prev_phase in c.TERMINAL_PHASES:
        draft = _Draft(prev_phase, reason=_prev_reason(previous), message=_prev_message(previous))
        _ttl(obs, spec, previous, draft)
        return draft
    if obs.recipe_source_missing:
        return _Draft(c.PENDING, reason=c.R_RECIPE_SOURCE, message=obs.recipe_source_missing)

    finished = [r for r in records if "finishTime" in r]
    active_pods = [p for p in obs.pods if att.pod_active(p)]

    # 1. What the last finished attempt says, when nothing runs after it.
    if finished and not active_pods and finished[-1] is records[-1]:
        last = finished[-1]
        verdict = att.classify(last)
        if verdict.outcome == att.SUCCEEDED:
            return _Draft(c.SUCCEEDED, reason="RunnerSucceeded", message="the runner succeeded")
        if verdict.outcome == att.PARTIAL:
            message = _runner_message(obs, last)
            return _Draft(
                c.PARTIALLY_SUCCEEDED,
                failure=_failure_from_attempt(obs, last, c.R_RUNNER_FAILED, message),
                reason="PartitionsFailed",
                message=message,
            )
        if verdict.outcome == att.TERMINAL:
            assert verdict.reason is not None
            message = f"{_TERMINAL_MESSAGES[verdict.reason]}: {_runner_message(obs, last)}"
            return _Draft(
                c.FAILED,
                failure=_failure_from_attempt(obs, last, verdict.reason, message),
                reason=verdict.reason,
                message=message,
            )

    # 2. Retryable failures beyond the limit.
    failures = [r for r in finished if att.classify(r).outcome == att.RETRYABLE]
    if len(failures) > spec.backoff_limit and not active_pods:
        last = failures[-1]
        message = (
            f"{len(failures)} attempts failed, backoffLimit is {spec.backoff_limit}; the last"
            f" ended with {att.describe_end(last)}: {_runner_message(obs, last)}"
        )
        return _Draft(
            c.FAILED,
            failure=_failure_from_attempt(obs, last, c.R_BACKOFF_LIMIT, message),
            reason=c.R_BACKOFF_LIMIT,
            message=message,
        )

    # 3. Deadlines.
    started = times.parse(previous.get("startTime")) or (
        times.parse(records[0]["startTime"]) if records else None
    )
    if (
        spec.active_deadline_seconds
        and started
        and not spec.suspend
        and obs.now - started > timedelta(seconds=spec.active_deadline_seconds)
    ):
        message = (
            f"the job ran longer than activeDeadlineSeconds ({spec.active_deadline_seconds} s)"
        )
        return _Draft(
            c.FAILED,
            failure={"reason": c.R_DEADLINE, "component": "operator", "message": message},
            reason=c.R_DEADLINE,
            message=message,
        )
    if spec.progress_deadline_seconds and active_pods and not spec.suspend:
        stalled = _stalled_since(obs, records)
        if stalled and obs.now - stalled > timedelta(seconds=spec.progress_deadline_seconds):
            message = (
                f"no checkpoint and no partition completed in progressDeadlineSeconds"
                f" ({spec.progress_deadline_seconds} s) since {times.fmt(stalled)}"
            )
            return _Draft(
                c.FAILED,
                failure={
                    "reason": c.R_STALLED,
                    "component": "runner",
                    "message": message,
                    "podName": records[-1].get("podName"),
                    "attempt": records[-1]["index"],
                },
                reason=c.R_STALLED,
                message=message,
            )

    # 4. Suspend: stop the runner and the cluster; Suspended only once they are gone.
    if spec.suspend:
        draft = _Draft(prev_phase if prev_phase not in (None, c.SUSPENDED) else c.PENDING)
        stop = _stop_active(obs, records, "Suspended")
        if stop:
            draft.actions.append(stop)
        if obs.ray_cluster is not None:
            draft.actions.append(Action("delete-ray"))
        if not active_pods and obs.ray_cluster is None:
            draft.phase = c.SUSPENDED
            draft.reason, draft.message = "Suspended", "spec.suspend is true; the runner is stopped"
        else:
            draft.reason = "Suspending"
            draft.message = "stopping the runner (the in-flight checkpoint commits first)"
        return draft

    # 5. Run: the cluster first (kuberay), then one runner pod at a time.
    draft = _Draft(c.STARTING)
    if spec.ray.mode == c.MODE_KUBERAY:
        cluster = obs.ray_cluster
        if cluster is None:
            draft.actions.append(Action("ensure-children"))
            draft.actions.append(Action("create-ray"))
            draft.cluster_ready = ("False", "Creating", "creating the RayCluster")
            draft.reason, draft.message = "ClusterCreating", "creating the RayCluster"
            return draft
        if not children.ray_cluster_ready(cluster):
            created = times.parse(cluster["metadata"].get("creationTimestamp")) or obs.now
            waited = obs.now - created
            if waited > timedelta(seconds=spec.ray.ready_timeout_seconds):
                message = (
                    f"the RayCluster {cluster['metadata']['name']} was not ready within"
                    f" ray.readyTimeoutSeconds ({spec.ray.ready_timeout_seconds} s)"
                    f"; its state: {(cluster.get('status') or {}).get('state') or 'unknown'}"
                )
                return _Draft(
                    c.FAILED,
                    failure={
                        "reason": c.R_CLUSTER_NOT_READY,
                        "component": "ray",
                        "message": message,
                    },
                    cluster_ready=("False", c.R_CLUSTER_NOT_READY, message),
                    reason=c.R_CLUSTER_NOT_READY,
                    message=message,
                )
            draft.cluster_ready = ("False", "NotReady", "waiting for the RayCluster to be ready")
            draft.reason, draft.message = (
                "ClusterNotReady",
                "waiting for the RayCluster to be ready",
            )
            return draft
        draft.cluster_ready = ("True", "Ready", "the RayCluster is ready")
        prev_ready = {
            cond["type"]: cond.get("status") for cond in previous.get("conditions") or []
        }.get(c.COND_CLUSTER_READY)
        if prev_ready != "True":
            draft.events.append(
                Event(
                    "Normal", "ClusterReady", f"RayCluster {cluster['metadata']['name']} is ready"
                )
            )

    if active_pods:
        pod = active_pods[-1]
        running = (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get(
            "deletionTimestamp"
        )
        draft.phase = c.RUNNING if running else c.STARTING
        draft.reason = "RunnerRunning" if running else "RunnerStarting"
        draft.message = f"runner pod {pod['metadata']['name']}"
        return draft

    next_attempt = (records[-1]["index"] + 1) if records else 1
    draft.actions.append(Action("ensure-children"))
    draft.actions.append(Action("create-pod", attempt=next_attempt))
    draft.reason, draft.message = "RunnerCreating", f"creating runner attempt {next_attempt}"
    if not records:
        draft.events.append(Event("Normal", "Started", "runner attempt 1 created"))
    else:
        last = records[-1]
        verdict = att.classify(last)
        if verdict.outcome == att.STOPPED:
            draft.events.append(
                Event(
                    "Normal",
                    "Resuming",
                    f"runner attempt {next_attempt} created after {last.get('stopReason')};"
                    " it resumes from the checkpoints in the work dir",
                )
            )
        else:
            draft.events.append(
                Event(
                    "Warning",
                    "Retrying",
                    f"runner attempt {last['index']} ended with {att.describe_end(last)};"
                    f" attempt {next_attempt} resumes from the checkpoints"
                    f" (restart {len(failures)} of {spec.backoff_limit})",
                )
            )
    return draft


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


def _stalled_since(obs: Observed, records: list[Obj]) -> datetime | None:
    """The last sign of progress: the last checkpoint, or the current attempt's start."""
    current = records[-1] if records else None
    marks = [times.parse(current["startTime"])] if current else []
    progress = _progress(obs.job)
    marks.append(times.parse(progress.get("lastCheckpointTime")))
    found = [m for m in marks if m is not None]
    return max(found) if found else None


def _ttl(obs: Observed, spec: JobSpec, previous: Obj, draft: _Draft) -> None:
    done = times.parse(previous.get("completionTime"))
    ttl = spec.ttl_seconds_after_finished
    if ttl is not None and done is not None and obs.now - done >= timedelta(seconds=ttl):
        draft.actions.append(Action("delete-job"))


def _prev_condition(previous: Obj, ctype: str) -> Obj:
    for cond in previous.get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return {}


def _prev_reason(previous: Obj) -> str:
    """The reason recorded when the job finished (kept verbatim once terminal)."""
    return str(_prev_condition(previous, c.COND_RUNNING).get("reason") or "")


def _prev_message(previous: Obj) -> str:
    return str(_prev_condition(previous, c.COND_FINISHED).get("message") or "")


def _conditions(obs: Observed, draft: _Draft, previous: Obj) -> list[Obj]:
    old = {cond.get("type"): cond for cond in previous.get("conditions") or []}
    phase = draft.phase
    failure = draft.failure or {}
    out = []

    def add(ctype: str, ok: bool, reason: str, message: str) -> None:
        out.append(_condition(old, ctype, "True" if ok else "False", reason, message, obs))

    invalid = failure.get("reason") == c.R_INVALID_SPEC
    add(
        c.COND_VALID,
        not invalid,
        c.R_INVALID_SPEC if invalid else "Valid",
        failure.get("message", "") if invalid else "the spec and the recipe are valid",
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
    return out


def _phase_events(draft: _Draft, records: list[Obj]) -> list[Event]:
    phase = draft.phase
    if phase == c.SUCCEEDED:
        return [
            Event("Normal", "Succeeded", f"the runner succeeded after {len(records)} attempt(s)")
        ]
    if phase == c.PARTIALLY_SUCCEEDED:
        return [Event("Warning", "PartiallySucceeded", draft.message)]
    if phase == c.FAILED:
        reason = (draft.failure or {}).get("reason") or "Failed"
        return [Event("Warning", reason, draft.message)]
    if phase == c.SUSPENDED:
        return [Event("Normal", "Suspended", "the runner is stopped; the volume is kept")]
    return []


def _resume_events(obs: Observed, previous: Obj) -> list[Event]:
    """`Resumed` once per attempt whose runner reported that it restored checkpoints."""
    progress = _progress(obs.job)
    restored = progress.get("resumedPartitions")
    checkpoints = progress.get("resumedCheckpoints")
    pod = progress.get("podName")
    if restored is None and checkpoints is None:
        return []
    recorded = {r.get("podName"): r for r in previous.get("attempts") or [] if r.get("resumedFrom")}
    if not pod or pod in recorded:
        return []
    return [
        Event(
            "Normal",
            "Resumed",
            f"runner pod {pod} resumed from the work dir: {restored or 0} partitions done,"
            f" {checkpoints or 0} checkpoints restored",
        )
    ]


def record_resumed(status: Obj, job: Obj) -> None:
    """Copy the runner's `resumed` report onto its attempt (so Resumed is posted once)."""
    progress = _progress(job)
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
