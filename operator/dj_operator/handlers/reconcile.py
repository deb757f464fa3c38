"""One reconcile of one DataJuicerJob: observe, derive, act, then write the status.

Level-triggered and idempotent: it can run at any moment, any number of times, concurrently with
an operator restart. One job is reconciled by one thread at a time (a lock per job). It says when
the job next needs a reconcile without an event (`Reconciled.due`, from
`dj_operator.status.wakeup`) and whether it must be retried (`Reconciled.retry`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kubernetes.client.rest import ApiException

from dj_operator.api import constants as c
from dj_operator.api.types import (
    BUILTIN_DEFAULTS,
    JobSpec,
    OperatorDefaults,
    SpecError,
    parse_spec,
)
from dj_operator.api.validation import (
    load_recipe_text,
    validate_recipe,
    validate_spec,
    work_dir_for,
)
from dj_operator.build import children, names, object_store
from dj_operator.events_catalog import EventReason
from dj_operator.kube import ChildConflict, CreateRefused, Kube
from dj_operator.metrics import default_metrics
from dj_operator.policy import DEFAULT_POLICY, Policy, check_job, check_paths
from dj_operator.status import attempts as att
from dj_operator.status import pinning, times, wakeup
from dj_operator.status.decide import EventDraft, Observed, keeps_no_cluster
from dj_operator.status.derive import Outcome, derive
from dj_operator.status.startup import Refusal
from dj_runner.contract import ExitCode

Obj = dict[str, Any]
log = logging.getLogger(__name__)

FAULT_ENV = "DJ_OPERATOR_FAULT"
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Reconciled:
    """A reconcile's result: the phase (None when the job is gone), when a time-based rule is
    next due (None: nothing pending), and whether to retry (a child name taken by another)."""

    phase: str | None
    due: datetime | None = None
    retry: bool = False
    written: str | None = None  # the job's resourceVersion after this reconcile's status patch
    seen: str = ""  # `inputs(job)` of the job this reconcile read


def inputs(job: Obj) -> str:
    """What of the job itself a reconcile reads that others write (the spec's generation, the
    runner's progress, a deletion), as a string to compare: an event whose job has the same
    inputs and the resourceVersion of the reconcile's own status write brings nothing new."""
    meta = job.get("metadata") or {}
    progress = (job.get("status") or {}).get("progress")
    return json.dumps(
        [meta.get("generation"), meta.get("deletionTimestamp"), progress], sort_keys=True
    )


def _lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def forget(namespace: str, name: str) -> None:
    """Drop a deleted job's lock, unless a reconcile holds it (a new lock beside a held one
    would let two reconciles of one job run at once)."""
    with _locks_guard:
        lock = _locks.get((namespace, name))
        if lock is not None and not lock.locked():
            del _locks[(namespace, name)]


def recipe_field(spec: JobSpec) -> str:
    """The spec field the job's recipe comes from, as errors name it."""
    if spec.recipe is not None:
        return "spec.recipe"
    return "spec.recipeYAML" if spec.recipe_yaml is not None else "spec.recipeFrom"


def read_recipe(kube: Kube | None, job: Obj, spec: JobSpec) -> tuple[Obj | None, str | None]:
    """The recipe mapping, or why it cannot be read yet (a missing ConfigMap or key).

    recipeFrom is read once per run: once the job has started, its recipe is the job's own
    copy (the recipe ConfigMap it made), so an edit or a deletion of the source changes nothing
    of a running job nor of its next attempt. The source is read again only when the job
    resumes from Suspended (the explicit restart at which a recipe may change)."""
    if spec.recipe is not None:
        return spec.recipe, None
    if spec.recipe_yaml is not None:
        return load_recipe_text(spec.recipe_yaml, "spec.recipeYAML"), None
    assert spec.recipe_from is not None and kube is not None
    meta, status = job["metadata"], job.get("status") or {}
    if status.get("startTime") and status.get("phase") != c.SUSPENDED and not spec.suspend:
        copy = kube.config_map_key(meta["namespace"], names.config_map(meta["name"]), c.RECIPE_KEY)
        if copy is not None:
            return load_recipe_text(copy, "the job's recipe ConfigMap"), None
    ref = spec.recipe_from.config_map_key_ref
    text = kube.config_map_key(job["metadata"]["namespace"], ref.name, ref.key)
    if text is None:
        return None, f"waiting for ConfigMap {ref.name} with key {ref.key} (spec.recipeFrom)"
    field = f"spec.recipeFrom.configMapKeyRef ({ref.name}/{ref.key})"
    return load_recipe_text(text, field), None


def observe(
    kube: Kube, job: Obj, defaults: OperatorDefaults = BUILTIN_DEFAULTS
) -> tuple[Observed, Obj | None, list[str]]:
    """What the job and its children are now; the recipe; the spec changes a pin overrides."""
    meta = job["metadata"]
    pin_changes: list[str] = []
    now = times.now()
    spec: JobSpec | None = None
    recipe: Obj | None = None
    error: SpecError | None = None
    missing = None
    paths: dict[str, str] = {}
    policy = defaults.policy or DEFAULT_POLICY
    try:
        spec = parse_spec(job.get("spec"), defaults)
        validate_spec(job.get("spec"), spec, meta["name"], meta["namespace"])
        check_job(job.get("spec"), policy)
        spec, pin_changes = pinning.apply(job, spec)
        recipe, missing = read_recipe(kube, job, spec)
        if recipe is not None:
            field = recipe_field(spec)
            paths = validate_recipe(
                recipe,
                spec.storage.mount,
                field,
                work_dir=work_dir_for(spec, meta["namespace"], meta["name"]),
                job_id=names.job_id(meta["namespace"], meta["name"], meta["uid"]),
            )
            check_paths(paths, spec.storage.mount, job.get("spec"), field, policy)
    except SpecError as exc:
        error = exc
    pods = kube.runner_pods(job)
    cluster = None
    ray_pods: list[Obj] = []
    if spec is not None and spec.ray.mode == c.MODE_KUBERAY:
        cluster = kube.get_ray_cluster(job)
        if cluster is not None and not children.ray_cluster_ready(cluster):
            ray_pods = kube.ray_pods(job)  # why it is not ready (one LIST, only then)
        elif cluster is None and keeps_no_cluster(job, spec):
            # A deleted RayCluster's pods on a lost node stay until removed (one LIST; such a
            # job is reconciled only on an event or while its Ray pods remain: wakeup.py).
            ray_pods = kube.ray_pods(job)
    # The log tail of each newly failed pod (read once: when its attempt is first seen ending).
    done_before = {
        r.get("podName")
        for r in (job.get("status") or {}).get("attempts") or []
        if "finishTime" in r
    }
    tails = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        if att.pod_terminal(pod) and name not in done_before:
            code = att.finish_record(pod, now).get("exitCode")
            if code not in (ExitCode.OK, None):
                tails[name] = kube.log_tail(meta["namespace"], name)
    observed = Observed(
        job=job,
        spec=spec,
        spec_error=error,
        pods=pods,
        now=now,
        work_dir=work_dir_for(spec, meta["namespace"], meta["name"]) if spec else None,
        output_path=paths.get("export_path"),
        ray_cluster=cluster,
        recipe_source_missing=missing,
        log_tails=tails,
        network_policy=names.network_policy(meta["name"]) if policy.network_policy else None,
        ray_pods=ray_pods,
        recipe_hash=recipe_hash(job, recipe) if recipe is not None and error is None else None,
    )
    return observed, recipe, pin_changes


def recipe_hash(job: Obj, recipe: Obj) -> str:
    """`status.recipeHash`: the SHA-256 of the recipe the job's pods read (its ConfigMap's
    text), so a user can tell which recipe a run used."""
    text = children.recipe_config_map(job, recipe)["data"][c.RECIPE_KEY]
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _ensure_children(
    kube: Kube, job: Obj, spec: JobSpec, recipe: Obj, policy: Policy = DEFAULT_POLICY
) -> list[str]:
    """Create or adopt the recipe ConfigMap, the claim (if templated), the runner RBAC, the
    job's NetworkPolicy (unless the policy turns it off) and, in kuberay mode, the Ray pods'
    ServiceAccount (before the RayCluster, whose pods name it; none when they run as the
    object store's workload identity)."""
    wanted = [children.recipe_config_map(job, recipe)]
    if spec.storage.volume_claim_template is not None:
        wanted.append(children.claim(job, spec))
    identity = object_store.identity(spec)
    wanted.extend(children.runner_rbac(job, identity))
    if policy.network_policy:
        wanted.append(children.network_policy(job, spec, policy.metrics_from))
    if spec.ray.mode == c.MODE_KUBERAY and identity is None:
        wanted.append(children.ray_service_account(job))
    created = []
    for obj in wanted:
        result = kube.create_or_adopt(obj, job)
        if result.created:
            created.append(f"{result.kind} {result.name}")
    return created


def act(
    kube: Kube,
    obs: Observed,
    outcome: Outcome,
    recipe: Obj | None,
    policy: Policy = DEFAULT_POLICY,
) -> list[EventDraft]:
    """Carry out the outcome's actions; return the Events they call for."""
    job = obs.job
    meta = job["metadata"]
    ns = meta["namespace"]
    spec = obs.spec
    extra: list[EventDraft] = []
    for action in outcome.actions:
        if action.kind == "ensure-children":
            assert spec is not None and recipe is not None
            created = _ensure_children(kube, job, spec, recipe, policy)
            if created:
                extra.append(EventDraft(EventReason.Created, "created " + ", ".join(created)))
        elif action.kind == "create-pod":
            assert spec is not None and action.attempt is not None and obs.work_dir
            pod = children.runner_pod(job, spec, action.attempt, obs.work_dir)
            kube.create_or_adopt(pod, job)
        elif action.kind == "create-ray":
            assert spec is not None
            kube.create_or_adopt(children.ray_cluster(job, spec), job)
        elif action.kind == "delete-ray":
            kube.delete_ray_cluster(ns, names.ray_cluster(meta["name"]))
        elif action.kind == "delete-pods":
            for pod_name in action.pods:
                kube.delete_pod(ns, pod_name)
        elif action.kind == "force-delete-pods":
            for pod_name in action.pods:
                kube.delete_pod(ns, pod_name, grace_period_seconds=0)
        elif action.kind == "delete-job":
            kube.delete_job(ns, meta["name"])
    return extra


def _owned_status(status: Obj) -> Obj:
    return {k: v for k, v in status.items() if k != "progress"}


def _fault_point(outcome: Outcome) -> None:
    """Fault injection for the crash-safety tests: with DJ_OPERATOR_FAULT=kill-after-create, the
    operator SIGKILLs itself right after creating a runner pod, before writing status."""
    if os.environ.get(FAULT_ENV) == "kill-after-create" and any(
        a.kind == "create-pod" for a in outcome.actions
    ):
        log.warning("%s=kill-after-create: killing the operator now", FAULT_ENV)
        os.kill(os.getpid(), signal.SIGKILL)


def reconcile(
    kube: Kube, namespace: str, name: str, defaults: OperatorDefaults = BUILTIN_DEFAULTS
) -> Reconciled:
    """Reconcile one job: a fresh GET of the job and its children, derive, act, write status."""
    with _lock(namespace, name):
        job = kube.get_job(namespace, name)
        if job is None:
            return Reconciled(None)
        if job["metadata"].get("deletionTimestamp"):
            return Reconciled((job.get("status") or {}).get("phase"))
        obs, recipe, pin_changes = observe(kube, job, defaults)
        outcome = derive(obs)
        policy = defaults.policy or DEFAULT_POLICY
        if pin_changes and outcome.phase not in c.TERMINAL_PHASES:
            kube.emit_event(job, EventReason.SpecChangePinned, pinning.message(pin_changes))
        try:
            extra = act(kube, obs, outcome, recipe, policy)
        except ChildConflict as exc:
            log.warning("%s/%s: %s", namespace, name, exc)
            kube.emit_event(job, EventReason.ChildConflict, str(exc))
            return Reconciled((job.get("status") or {}).get("phase"), retry=True)
        except CreateRefused as exc:
            # Decided again with the refusal: 422 fails the job, 403 blocks it and backs off.
            log.warning("%s/%s: create refused: %s", namespace, name, exc)
            default_metrics().reconcile_error("reconcile")
            obs = replace(obs, refusal=Refusal(exc.code, exc.kind, exc.name, exc.message))
            outcome = derive(obs)
            extra = act(kube, obs, outcome, recipe, policy)
        if obs.spec is not None and outcome.status.get("startTime"):
            # Pinned with the first attempt; merge-patched, so it then stays as written.
            outcome.status["pinned"] = (job.get("status") or {}).get("pinned") or pinning.pins_of(
                job, obs.spec
            )
        _fault_point(outcome)
        for event in [*extra, *outcome.events]:
            kube.emit_event(job, event.reason, event.message)
        previous = _owned_status(job.get("status") or {})
        desired = {k: v for k, v in outcome.status.items() if not (v is None and k not in previous)}
        written = None
        if any(previous.get(k) != v for k, v in desired.items()):
            try:
                written = kube.patch_status(namespace, name, desired)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if outcome.phase != (job.get("status") or {}).get("phase"):
            log.info(
                "%s/%s: %s -> %s",
                namespace,
                name,
                (job.get("status") or {}).get("phase"),
                outcome.phase,
            )
        due = wakeup.next_check(obs, outcome.status)
        return Reconciled(outcome.phase, due, written=written, seen=inputs(job))
