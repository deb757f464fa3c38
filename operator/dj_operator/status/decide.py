"""The decision of a reconcile: the phase, the failure, the actions and the transition Events.

``decide`` reads what the handler observed (``Observed``) and the merged attempt records, and
asks a table of rules (``RULES``), in order, until one decides; each rule is a small function
of the same facts. No I/O. ``dj_operator.status.derive`` turns the decision into the status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dj_operator.api import constants as c
from dj_operator.api.types import JobSpec, SpecError
from dj_operator.build import children
from dj_operator.events_catalog import EventReason, EventType
from dj_operator.status import attempts as att
from dj_operator.status import times
from dj_operator.status.startup import Blocker, Refusal, first_blocker, pending_reason

Obj = dict[str, Any]


@dataclass(frozen=True)
class Observed:
    """What the handler read for one reconcile: the job, its parsed spec (or why it is
    invalid), its runner pods, its RayCluster (and its pods) and the log tails of newly failed
    pods; ``refusal`` when this reconcile's create was refused by the API server."""

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
    ray_pods: list[Obj] = field(default_factory=list)  # kuberay mode: the head and worker pods
    refusal: Refusal | None = None  # a create of this reconcile that the API server refused
    recipe_hash: str | None = None  # the SHA-256 of the recipe the pods read


@dataclass(frozen=True)
class Action:
    """A change the handler makes to the job's children (or the job) after the decision."""

    # ensure-children | create-pod | delete-pods | force-delete-pods | create-ray | delete-ray
    # | delete-job
    kind: str
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


@dataclass
class Draft:
    """What the rules decide; `derive` completes it into the status."""

    phase: str
    failure: Obj | None = None
    cluster_ready: tuple[str, str, str] | None = None  # status, reason, message
    reason: str = ""
    message: str = ""
    actions: list[Action] = field(default_factory=list)
    events: list[EventDraft] = field(default_factory=list)
    #: What keeps the pods from starting (the Blocked condition); None: nothing known.
    blocked: Blocker | None = None
    #: `status.createBackoff` after a forbidden create: refusals so far, the next try.
    create_backoff: Obj | None = None
    #: Why the spec is invalid while an attempt that started with a valid one still runs.
    spec_invalid: str | None = None


def runner_progress(job: Obj) -> Obj:
    """`status.progress`: what the runner reported of its work."""
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
    error = runner_progress(obs.job).get("error") or {}
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
    error = runner_progress(obs.job).get("error") or {}
    if error.get("message"):
        return str(error["message"])
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else f"the runner ended with {att.describe_end(rec)}"


TERMINAL_MESSAGES = {
    c.R_RUNNER_FAILED: "the runner failed (partitions failed beyond the recipe's limit)",
    c.R_INVALID_INPUT: "the runner refused its input",
    c.R_RESUME_REFUSED: "the runner refused to resume the work dir",
}

#: The wait after the first forbidden create; it doubles with each refusal, up to the maximum.
CREATE_BACKOFF_FIRST_S = 10
CREATE_BACKOFF_MAX_S = 300


def stop_active(obs: Observed, records: list[Obj], reason: str) -> Action | None:
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


def keeps_no_cluster(job: Obj, spec: JobSpec | None) -> bool:
    """Whether the job is to have no RayCluster: it is finished, or suspended."""
    phase = (job.get("status") or {}).get("phase")
    return phase in c.TERMINAL_PHASES or (spec is not None and spec.suspend)


def lost_after(pod: Obj) -> datetime | None:
    """When a deleted pod that is still there counts as lost: LOST_POD_MARGIN_SECONDS after its
    deletion's grace period ended (its `deletionTimestamp`), when a kubelet would long have
    ended it and removed it. None: the pod is not being deleted."""
    deleted = times.parse(pod["metadata"].get("deletionTimestamp"))
    return deleted + timedelta(seconds=c.LOST_POD_MARGIN_SECONDS) if deleted else None


# -- the rules --------------------------------------------------------------------------------


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
    #: What keeps the current pods from starting, read from them (or None).
    blocker: Blocker | None


#: A rule: the draft it decides, or None to let the next rule decide.
_Rule = Callable[[_Facts], Draft | None]


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
) -> Draft:
    """A draft that ends the job: its phase, its failure and the Running condition's reason."""
    return Draft(
        phase,
        failure=_failure(reason, component, message, obs, rec),
        reason=condition_reason or reason,
        message=message,
    )


def _keep_terminal(
    obs: Observed, spec: JobSpec | None, prev_phase: str | None, previous: Obj
) -> Draft | None:
    """A finished job stays finished (and goes when its TTL has passed), whatever happened to
    its spec since: an edit, a tighter installation policy or an operator upgrade that would
    now refuse it changes nothing that is done."""
    if prev_phase not in c.TERMINAL_PHASES:
        return None
    assert prev_phase is not None
    draft = Draft(prev_phase, reason=_prev_reason(previous), message=_prev_message(previous))
    if spec is not None:
        _ttl(obs, spec, previous, draft)
    return draft


def _lost_runner(f: _Facts) -> Draft | None:
    """A runner pod whose deletion no kubelet completes: its node stopped reporting and
    Kubernetes evicted the pod after `runner.nodeLostTolerationSeconds` (or someone deleted it
    there). Only the pod object is left; remove it (grace 0) and record the attempt stopped,
    so the next one starts, on a node that reports (the lost one is tainted). A runner that
    still runs on a cut-off node cannot commit after the next one's claim (the work dir's
    fencing)."""
    lost = [p for p in f.active_pods if (due := lost_after(p)) is not None and f.obs.now >= due]
    if not lost:
        return None
    pods = tuple(sorted(p["metadata"]["name"] for p in lost))
    for rec in f.records:
        if rec.get("podName") in pods and "finishTime" not in rec:
            rec.setdefault("stopReason", c.STOP_NODE_LOST)
    pod = lost[-1]
    evicted = any(
        cond.get("type") == "DisruptionTarget" and cond.get("reason") == "DeletionByTaintManager"
        for cond in (pod.get("status") or {}).get("conditions") or []
    )
    node = (pod.get("spec") or {}).get("nodeName") or "?"
    where = f"runner pod {pod['metadata']['name']} on node {node}"
    why = " (Kubernetes evicted it: its node stopped reporting)" if evicted else ""
    message = (
        f"{where} is still there {c.LOST_POD_MARGIN_SECONDS} s after its grace period ended"
        f"{why}: no kubelet ends it; removing it, the next attempt resumes from the checkpoints"
        " on another node"
    )
    phase = f.prev_phase if f.prev_phase in (c.RUNNING, c.STARTING) else c.STARTING
    draft = Draft(phase, reason=c.STOP_NODE_LOST, message=message)
    draft.actions.append(Action("force-delete-pods", pods=pods))
    draft.events.append(EventDraft(EventReason.RunnerLost, message))
    return draft


def _recipe_source_missing(f: _Facts) -> Draft | None:
    """No recipe to start from: wait (only while nothing runs; a running job keeps its copy)."""
    missing = f.obs.recipe_source_missing
    if not missing or f.active_pods:
        return None
    return Draft(c.PENDING, reason=c.R_RECIPE_SOURCE, message=missing)


def _refused(f: _Facts) -> Draft | None:
    """A create this reconcile made was refused: 422/400 fails the job (the object is invalid,
    a retry is refused again); 403 (quota, admission) blocks it and backs off."""
    refusal = f.obs.refusal
    if refusal is None:
        return None
    if refusal.invalid:
        return _failed(c.R_POD_CREATE_FAILED, "operator", refusal.describe())
    count = int((f.previous.get("createBackoff") or {}).get("refusals") or 0) + 1
    wait = min(CREATE_BACKOFF_MAX_S, CREATE_BACKOFF_FIRST_S * 2 ** (count - 1))
    retry = f.obs.now + timedelta(seconds=wait)
    message = f"{refusal.describe()}; retrying at {times.fmt(retry)}"
    draft = Draft(
        c.STARTING if f.records else c.PENDING, reason=c.B_CREATE_FORBIDDEN, message=message
    )
    draft.blocked = Blocker(c.B_CREATE_FORBIDDEN, message)
    draft.create_backoff = {"refusals": count, "retryTime": times.fmt(retry)}
    draft.events.append(EventDraft(EventReason.CreateForbidden, message))
    return draft


def _create_backoff(f: _Facts) -> Draft | None:
    """After a forbidden create: no new create before `status.createBackoff.retryTime`."""
    backoff = f.previous.get("createBackoff") or {}
    retry = times.parse(backoff.get("retryTime"))
    if retry is None or f.obs.now >= retry or f.active_pods:
        return None
    prev = _prev_condition(f.previous, c.COND_BLOCKED)
    message = str(prev.get("message") or f"a create was forbidden; retrying at {times.fmt(retry)}")
    draft = Draft(c.STARTING if f.records else c.PENDING, reason=c.B_CREATE_FORBIDDEN)
    draft.message = message
    draft.blocked = Blocker(c.B_CREATE_FORBIDDEN, message)
    draft.create_backoff = dict(backoff)
    return draft


def _startup_deadline(f: _Facts) -> Draft | None:
    """Fail when the current runner pod has not run within spec.startupDeadlineSeconds of its
    creation, or the pods have been Blocked that long."""
    deadline = f.spec.startup_deadline_seconds
    if f.spec.suspend:
        return None
    bound = timedelta(seconds=deadline)
    waiting = [
        p
        for p in f.active_pods
        if (p.get("status") or {}).get("phase") != "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]
    for pod in waiting:
        created = times.parse(pod["metadata"].get("creationTimestamp"))
        if created is not None and f.obs.now - created > bound:
            why = f.blocker.message if f.blocker else pending_reason(pod)
            message = (
                f"runner pod {pod['metadata']['name']} did not start within"
                f" startupDeadlineSeconds ({deadline} s): {why}"
            )
            return _failed(c.R_STARTUP_DEADLINE, "runner", message)
    prev = _prev_condition(f.previous, c.COND_BLOCKED)
    since = times.parse(prev.get("lastTransitionTime"))
    current = f.blocker or (
        Blocker(c.B_CREATE_FORBIDDEN, str(prev.get("message") or ""))
        if prev.get("reason") == c.B_CREATE_FORBIDDEN and f.previous.get("createBackoff")
        else None
    )
    if (
        prev.get("status") == "True"
        and current is not None
        and prev.get("reason") == current.reason
        and since is not None
        and f.obs.now - since > bound
    ):
        component = "operator" if current.reason == c.B_CREATE_FORBIDDEN else "runner"
        if f.blocker is not None and first_blocker(f.active_pods) is None:
            component = "ray"  # the blocked pod is a Ray head or worker
        message = (
            f"the job's pods could not start within startupDeadlineSeconds ({deadline} s):"
            f" {current.message}"
        )
        return _failed(c.R_STARTUP_DEADLINE, component, message)
    return None


def _last_attempt_verdict(f: _Facts) -> Draft | None:
    return _verdict(f.obs, f.records, f.finished, f.active_pods)


def _verdict(
    obs: Observed, records: list[Obj], finished: list[Obj], active: list[Obj]
) -> Draft | None:
    """What the last finished attempt says, when nothing runs after it."""
    if not finished or active or finished[-1] is not records[-1]:
        return None
    last = finished[-1]
    verdict = att.classify(last)
    if verdict.outcome == att.SUCCEEDED:
        return Draft(c.SUCCEEDED, reason="RunnerSucceeded", message="the runner succeeded")
    if verdict.outcome == att.PARTIAL:
        message = _runner_message(obs, last)
        return _failed(
            c.R_RUNNER_FAILED,
            "runner",
            message,
            obs,
            last,
            phase=c.PARTIALLY_SUCCEEDED,
            condition_reason="PartitionsFailed",
        )
    if verdict.outcome == att.TERMINAL:
        assert verdict.reason is not None
        message = f"{TERMINAL_MESSAGES[verdict.reason]}: {_runner_message(obs, last)}"
        return _failed(verdict.reason, "runner", message, obs, last)
    return None


def _backoff_exceeded(f: _Facts) -> Draft | None:
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


def _active_deadline(f: _Facts) -> Draft | None:
    deadline = f.spec.active_deadline_seconds
    started = times.parse(f.previous.get("startTime")) or (
        times.parse(f.records[0]["startTime"]) if f.records else None
    )
    if not deadline or not started or f.spec.suspend:
        return None
    if f.obs.now - started - suspended_time(f.previous, f.obs.now) <= timedelta(seconds=deadline):
        return None
    message = (
        f"the job ran longer than activeDeadlineSeconds ({deadline} s, suspended time not counted)"
    )
    return _failed(c.R_DEADLINE, "operator", message)


def _progress_deadline(f: _Facts) -> Draft | None:
    deadline = f.spec.progress_deadline_seconds
    if not deadline or not f.active_pods or f.spec.suspend:
        return None
    stalled = stalled_since(f.obs, f.records)
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


def _suspend(f: _Facts) -> Draft | None:
    """Stop the runner and the cluster; Suspended only once they are gone."""
    if not f.spec.suspend:
        return None
    draft = Draft(f.prev_phase if f.prev_phase not in (None, c.SUSPENDED) else c.PENDING)
    stop = stop_active(f.obs, f.records, "Suspended")
    if stop:
        draft.actions.append(stop)
    if f.obs.ray_cluster is not None:
        draft.actions.append(Action("delete-ray"))
    if f.obs.ray_cluster is None:
        remove_lost_ray_pods(f.obs, draft, "the job is suspended")
    if not f.active_pods and f.obs.ray_cluster is None:
        draft.phase = c.SUSPENDED
        draft.reason, draft.message = "Suspended", "spec.suspend is true; the runner is stopped"
    else:
        draft.reason = "Suspending"
        draft.message = "stopping the runner (the in-flight checkpoint commits first)"
    return draft


def _cluster_not_ready(f: _Facts) -> Draft | None:
    """kuberay mode: create the cluster, wait for it, fail past spec.ray.readyTimeoutSeconds."""
    if f.spec.ray.mode != c.MODE_KUBERAY:
        return None
    cluster = f.obs.ray_cluster
    if cluster is None:
        draft = Draft(c.STARTING, reason="ClusterCreating", message="creating the RayCluster")
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
    if f.blocker is not None:
        waiting += f": {f.blocker.message}"
    draft = Draft(c.STARTING, reason="ClusterNotReady", message=waiting)
    draft.cluster_ready = ("False", "NotReady", waiting)
    remove_lost_ray_pods(f.obs, draft, "KubeRay replaces them")
    return draft


def remove_lost_ray_pods(obs: Observed, draft: Draft, then: str) -> None:
    """Ray pods whose deletion no kubelet completes (their node is lost, Kubernetes evicted
    them, or their deleted RayCluster's garbage collection deleted them): KubeRay replaces a
    head or worker only once its pod is gone, and a finished or suspended job's pods would
    stay for good, so remove them. ``then``: what follows, for the Event."""
    lost = [p for p in obs.ray_pods if (due := lost_after(p)) is not None and obs.now >= due]
    if not lost:
        return
    pods = tuple(sorted(p["metadata"]["name"] for p in lost))
    nodes = sorted({(p.get("spec") or {}).get("nodeName") or "?" for p in lost})
    message = (
        f"Ray pods {', '.join(pods)} on node {', '.join(nodes)} are still there"
        f" {c.LOST_POD_MARGIN_SECONDS} s after their grace period ended: no kubelet ends them;"
        f" removing them, {then}"
    )
    draft.actions.append(Action("force-delete-pods", pods=pods))
    draft.events.append(EventDraft(EventReason.RayPodLost, message))


def _run(f: _Facts) -> Draft:
    """Run: one runner pod at a time (on a ready cluster in kuberay mode)."""
    draft = Draft(c.STARTING)
    if f.spec.ray.mode == c.MODE_KUBERAY:
        assert f.obs.ray_cluster is not None
        draft.cluster_ready = ("True", "Ready", "the RayCluster is ready")
        if _prev_condition(f.previous, c.COND_CLUSTER_READY).get("status") != "True":
            name = f.obs.ray_cluster["metadata"]["name"]
            draft.events.append(EventDraft(EventReason.ClusterReady, f"RayCluster {name} is ready"))
    if f.active_pods:
        pod = f.active_pods[-1]
        name = pod["metadata"]["name"]
        # A runner that is stopping still runs (its checkpoint commits): Running, not Starting.
        running = (pod.get("status") or {}).get("phase") == "Running"
        draft.phase = c.RUNNING if running else c.STARTING
        if pod["metadata"].get("deletionTimestamp"):
            draft.reason, draft.message = "RunnerStopping", f"runner pod {name} is stopping"
        elif running:
            draft.reason, draft.message = "RunnerRunning", f"runner pod {name}"
        else:
            draft.reason = "RunnerStarting"
            draft.message = f"runner pod {name} is not running yet: {pending_reason(pod)}"
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
    _lost_runner,
    _last_attempt_verdict,
    _backoff_exceeded,
    _active_deadline,
    _progress_deadline,
    _startup_deadline,
    _refused,
    _suspend,
    _recipe_source_missing,
    _create_backoff,
    _cluster_not_ready,
    _run,
)


def decide(obs: Observed, records: list[Obj], prev_phase: str | None, previous: Obj) -> Draft:
    """A finished job's phase; else the first decision of `RULES` (an invalid spec fails
    before any rule)."""
    terminal = _keep_terminal(obs, obs.spec, prev_phase, previous)
    if terminal is not None:
        return terminal
    finished = [r for r in records if "finishTime" in r]
    active = [p for p in obs.pods if att.pod_active(p)]
    if obs.spec_error is not None or obs.spec is None:
        message = str(obs.spec_error) if obs.spec_error else "the spec could not be read"
        return _invalid_spec(obs, records, finished, active, prev_phase, message)
    facts = _Facts(
        obs=obs,
        spec=obs.spec,
        records=records,
        finished=finished,
        active_pods=active,
        failures=[r for r in finished if att.classify(r).outcome == att.RETRYABLE],
        prev_phase=prev_phase,
        previous=previous,
        blocker=first_blocker(active) or first_blocker(obs.ray_pods),
    )
    for rule in RULES:
        draft = rule(facts)
        if draft is not None:
            if draft.blocked is None and draft.phase not in c.TERMINAL_PHASES:
                draft.blocked = facts.blocker
            return draft
    raise AssertionError("_run always decides")


def suspended_time(previous: Obj, now: datetime) -> timedelta:
    """How long the job has been suspended since it started: `status.suspendedSeconds`, plus
    the suspension still open (`status.suspendedSince`) until the reconcile that ends it."""
    total = timedelta(seconds=int(previous.get("suspendedSeconds") or 0))
    since = times.parse(previous.get("suspendedSince"))
    return total + (now - since if since is not None else timedelta(0))


def _invalid_spec(
    obs: Observed,
    records: list[Obj],
    finished: list[Obj],
    active: list[Obj],
    prev_phase: str | None,
    message: str,
) -> Draft:
    """An invalid spec fails a job that has not started. One that started with a valid spec
    (an edit the schema allows but the operator refuses, a tighter installation policy) keeps
    its running attempt and the verdict of its last one: nothing starts until the spec is valid
    again, and a runner that then exits 0 still makes the job Succeeded."""
    verdict = _verdict(obs, records, finished, active)
    if verdict is not None:
        return verdict
    if active and prev_phase in (c.STARTING, c.RUNNING):
        running = any((p.get("status") or {}).get("phase") == "Running" for p in active)
        draft = Draft(c.RUNNING if running else c.STARTING, reason="SpecInvalid")
        draft.message = (
            "the running attempt goes on with the spec it started with; no new attempt starts"
            f" until the spec is valid again: {message}"
        )
        draft.spec_invalid = message
        return draft
    return _failed(c.R_INVALID_SPEC, "validation", message)


def stalled_since(obs: Observed, records: list[Obj]) -> datetime | None:
    """The last sign of progress: the last checkpoint, or the current attempt's start."""
    current = records[-1] if records else None
    marks = [times.parse(current["startTime"])] if current else []
    progress = runner_progress(obs.job)
    marks.append(times.parse(progress.get("lastCheckpointTime")))
    found = [m for m in marks if m is not None]
    return max(found) if found else None


def _ttl(obs: Observed, spec: JobSpec, previous: Obj, draft: Draft) -> None:
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
