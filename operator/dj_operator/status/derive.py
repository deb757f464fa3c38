"""The state machine: recomputed on every reconcile from what is observed, never from edges.

`derive(Observed) -> Outcome`: the operator-owned status fields (everything but `progress`, which
the runner writes), the actions that bring the children to what the phase needs, and the Events of
the transitions. No I/O: the handler observes, calls this, acts, then writes the status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dj_operator.api import constants as c
from dj_operator.api.types import JobSpec, SpecError
from dj_operator.build import children, names
from dj_operator.events_catalog import EventReason, EventType
from dj_operator.events_catalog import reason as event_reason
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


@dataclass(frozen=True)
class Action:
    kind: str  # ensure-children | create-pod | delete-pods | create-ray | delete-ray | delete-job
    attempt: int | None = None
    pods: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventDraft:
    """A Kubernetes Event the reconcile is to post on the job: a catalog reason, a message."""

    reason: EventReason
    message: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, EventReason):
            raise TypeError(
                f"an Event's reason is an EventReason of the catalog, not {self.reason!r}"
            )

    @property
    def type(self) -> EventType:
        return self.reason.type


@dataclass(frozen=True)
class Outcome:
    status: Obj
    actions: tuple[Action, ...]
    events: tuple[EventDraft, ...]

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
    events: list[EventDraft] = field(default_factory=list)


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


# -- the decision: a table of rules --------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """What the rules read: the observation and the attempts, sorted once."""

    obs: Observed
    spec: JobSpec
    records: list[Obj]
    finished: list[Obj]
    active_pods: list[Obj]
    #: Finished attempts that ended retryably.
    failures: list[Obj]
    prev_phase: str | None
    previous: Obj


#: A rule: the draft it decides, or None to let the next rule decide.
_Rule = Callable[[_Facts], _Draft | None]


def _failure(
    reason: str, component: str, message: str, obs: Observed | None = None, rec: Obj | None = None
) -> Obj:
    """`status.failure`: with ``rec`` (and ``obs``), located at that attempt and its runner."""
    if rec is None or obs is None:
        return {"reason": reason, "component": component, "message": message}
    return _failure_from_attempt(obs, rec, reason, message)


def _failed(
    reason: str,
    component: str,
    message: str,
    obs: Observed | None = None,
    rec: Obj | None = None,
    phase: str = c.FAILED,
    condition_reason: str | None = None,
) -> _Draft:
    """A draft that ends the job: its phase, its failure and the Running condition's reason."""
    return _Draft(
        phase,
        failure=_failure(reason, component, message, obs, rec),
        reason=condition_reason or reason,
        message=message,
    )


def _keep_terminal(f: _Facts) -> _Draft | None:
    """A finished job stays finished (and goes when its TTL has passed)."""
    if f.prev_phase not in c.TERMINAL_PHASES:
        return None
    assert f.prev_phase is not None
    draft = _Draft(f.prev_phase, reason=_prev_reason(f.previous), message=_prev_message(f.previous))
    _ttl(f.obs, f.spec, f.previous, draft)
    return draft


def _recipe_source_missing(f: _Facts) -> _Draft | None:
    missing = f.obs.recipe_source_missing
    return _Draft(c.PENDING, reason=c.R_RECIPE_SOURCE, message=missing) if missing else None


def _last_attempt_verdict(f: _Facts) -> _Draft | None:
    """What the last finished attempt says, when nothing runs after it."""
    if not f.finished or f.active_pods or f.finished[-1] is not f.records[-1]:
        return None
    last = f.finished[-1]
    verdict = att.classify(last)
    if verdict.outcome == att.SUCCEEDED:
        return _Draft(c.SUCCEEDED, reason="RunnerSucceeded", message="the runner succeeded")
    if verdict.outcome == att.PARTIAL:
        message = _runner_message(f.obs, last)
        return _failed(
            c.R_RUNNER_FAILED,
            "runner",
            message,
            f.obs,
            last,
            phase=c.PARTIALLY_SUCCEEDED,
            condition_reason="PartitionsFailed",
        )
    if verdict.outcome == att.TERMINAL:
        assert verdict.reason is not None
        message = f"{_TERMINAL_MESSAGES[verdict.reason]}: {_runner_message(f.obs, last)}"
        return _failed(verdict.reason, "runner", message, f.obs, last)
    return None


def _backoff_exceeded(f: _Facts) -> _Draft | None:
    """Retryable failures beyond spec.backoffLimit."""
    limit = f.spec.backoff_limit
    if len(f.failures) <= limit or f.active_pods:
        return None
    last = f.failures[-1]
    message = (
        f"{len(f.failures)} attempts failed, backoffLimit is {limit}; the last"
        f" ended with {att.describe_end(last)}: {_runner_message(f.obs, last)}"
    )
    return _failed(c.R_BACKOFF_LIMIT, "runner", message, f.obs, last)


def _active_deadline(f: _Facts) -> _Draft | None:
    deadline = f.spec.active_deadline_seconds
    started = times.parse(f.previous.get("startTime")) or (
        times.parse(f.records[0]["startTime"]) if f.records else None
    )
    if not deadline or not started or f.spec.suspend:
        return None
    if f.obs.now - started <= timedelta(seconds=deadline):
        return None
    message = f"the job ran longer than activeDeadlineSeconds ({deadline} s)"
    return _failed(c.R_DEADLINE, "operator", message)


def _progress_deadline(f: _Facts) -> _Draft | None:
    deadline = f.spec.progress_deadline_seconds
    if not deadline or not f.active_pods or f.spec.suspend:
        return None
    stalled = _stalled_since(f.obs, f.records)
    if not stalled or f.obs.now - stalled <= timedelta(seconds=deadline):
        return None
    message = (
        f"no checkpoint and no partition completed in progressDeadlineSeconds"
        f" ({deadline} s) since {times.fmt(stalled)}"
    )
    draft = _failed(c.R_STALLED, "runner", message)
    assert draft.failure is not None
    draft.failure["podName"] = f.records[-1].get("podName")
    draft.failure["attempt"] = f.records[-1]["index"]
    return draft


def _suspend(f: _Facts) -> _Draft | None:
    """Stop the runner and the cluster; Suspended only once they are gone."""
    if not f.spec.suspend:
        return None
    draft = _Draft(f.prev_phase if f.prev_phase not in (None, c.SUSPENDED) else c.PENDING)
    stop = _stop_active(f.obs, f.records, "Suspended")
    if stop:
        draft.actions.append(stop)
    if f.obs.ray_cluster is not None:
        draft.actions.append(Action("delete-ray"))
    if not f.active_pods and f.obs.ray_cluster is None:
        draft.phase = c.SUSPENDED
        draft.reason, draft.message = "Suspended", "spec.suspend is true; the runner is stopped"
    else:
        draft.reason = "Suspending"
        draft.message = "stopping the runner (the in-flight checkpoint commits first)"
    return draft


def _cluster_not_ready(f: _Facts) -> _Draft | None:
    """kuberay mode: create the cluster, wait for it, fail past spec.ray.readyTimeoutSeconds."""
    if f.spec.ray.mode != c.MODE_KUBERAY:
        return None
    cluster = f.obs.ray_cluster
    if cluster is None:
        draft = _Draft(c.STARTING, reason="ClusterCreating", message="creating the RayCluster")
        draft.actions += [Action("ensure-children"), Action("create-ray")]
        draft.cluster_ready = ("False", "Creating", "creating the RayCluster")
        return draft
    if children.ray_cluster_ready(cluster):
        return None
    created = times.parse(cluster["metadata"].get("creationTimestamp")) or f.obs.now
    timeout = f.spec.ray.ready_timeout_seconds
    if f.obs.now - created > timedelta(seconds=timeout):
        message = (
            f"the RayCluster {cluster['metadata']['name']} was not ready within"
            f" ray.readyTimeoutSeconds ({timeout} s)"
            f"; its state: {(cluster.get('status') or {}).get('state') or 'unknown'}"
        )
        draft = _failed(c.R_CLUSTER_NOT_READY, "ray", message)
        draft.cluster_ready = ("False", c.R_CLUSTER_NOT_READY, message)
        return draft
    waiting = "waiting for the RayCluster to be ready"
    draft = _Draft(c.STARTING, reason="ClusterNotReady", message=waiting)
    draft.cluster_ready = ("False", "NotReady", waiting)
    return draft


def _run(f: _Facts) -> _Draft:
    """Run: one runner pod at a time (on a ready cluster in kuberay mode)."""
    draft = _Draft(c.STARTING)
    if f.spec.ray.mode == c.MODE_KUBERAY:
        assert f.obs.ray_cluster is not None
        draft.cluster_ready = ("True", "Ready", "the RayCluster is ready")
        if _prev_condition(f.previous, c.COND_CLUSTER_READY).get("status") != "True":
            name = f.obs.ray_cluster["metadata"]["name"]
            draft.events.append(EventDraft(EventReason.ClusterReady, f"RayCluster {name} is ready"))
    if f.active_pods:
        pod = f.active_pods[-1]
        running = (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get(
            "deletionTimestamp"
        )
        draft.phase = c.RUNNING if running else c.STARTING
        draft.reason = "RunnerRunning" if running else "RunnerStarting"
        draft.message = f"runner pod {pod['metadata']['name']}"
        return draft
    next_attempt = (f.records[-1]["index"] + 1) if f.records else 1
    draft.actions += [Action("ensure-children"), Action("create-pod", attempt=next_attempt)]
    draft.reason, draft.message = "RunnerCreating", f"creating runner attempt {next_attempt}"
    draft.events.append(_attempt_event(f, next_attempt))
    return draft


def _attempt_event(f: _Facts, next_attempt: int) -> EventDraft:
    """Why a new attempt starts: the first, a resume after a stop, or a retry."""
    if not f.records:
        return EventDraft(EventReason.Started, "runner attempt 1 created")
    last = f.records[-1]
    if att.classify(last).outcome == att.STOPPED:
        return EventDraft(
            EventReason.Resuming,
            f"runner attempt {next_attempt} created after {last.get('stopReason')};"
            " it resumes from the checkpoints in the work dir",
        )
    return EventDraft(
        EventReason.Retrying,
        f"runner attempt {last['index']} ended with {att.describe_end(last)};"
        f" attempt {next_attempt} resumes from the checkpoints"
        f" (restart {len(f.failures)} of {f.spec.backoff_limit})",
    )


#: The rules, in order: the first that decides wins; `_run` always decides.
RULES: tuple[_Rule, ...] = (
    _keep_terminal,
    _recipe_source_missing,
    _last_attempt_verdict,
    _backoff_exceeded,
    _active_deadline,
    _progress_deadline,
    _suspend,
    _cluster_not_ready,
    _run,
)


def _decide(obs: Observed, records: list[Obj], prev_phase: str | None, previous: Obj) -> _Draft:
    if obs.spec_error is not None or obs.spec is None:
        message = str(obs.spec_error) if obs.spec_error else "the spec could not be read"
        return _failed(c.R_INVALID_SPEC, "validation", message)
    finished = [r for r in records if "finishTime" in r]
    facts = _Facts(
        obs=obs,
        spec=obs.spec,
        records=records,
        finished=finished,
        active_pods=[p for p in obs.pods if att.pod_active(p)],
        failures=[r for r in finished if att.classify(r).outcome == att.RETRYABLE],
        prev_phase=prev_phase,
        previous=previous,
    )
    for rule in RULES:
        draft = rule(facts)
        if draft is not None:
            return draft
    raise AssertionError("_run always decides")


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


def _phase_events(draft: _Draft, records: list[Obj]) -> list[EventDraft]:
    phase = draft.phase
    if phase == c.SUCCEEDED:
        message = f"the runner succeeded after {len(records)} attempt(s)"
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
        EventDraft(
            EventReason.Resumed,
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
