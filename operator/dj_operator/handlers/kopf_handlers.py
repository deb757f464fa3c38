"""The kopf registrations: settings at startup, the watch events that drive reconciles, a probe.

Reconciles are driven by kopf's watches of the jobs and of their children (runner pods,
RayClusters), never by a pass over every job: a job costs API calls when it or a child changes.
A job that is finished or Suspended with its current generation reconciled (`wakeup.settled`)
costs nothing: its own events and the replays of kopf's initial listing are skipped, its TTL is
a timer; only a Ray pod of its being deleted wakes it (`wakeup.ray_pod_wakes`). The echo of the operator's own status write (the resourceVersion it returned, with the
spec's generation and the runner's progress as that reconcile read them) wakes no job. Events of one job coalesce: while its reconcile runs, further events mark it to run
once more afterwards, as a work queue does. Time-based rules (deadlines, TTLs) and retries of a
failed reconcile are per-job timers (`timers.py`), set from what each reconcile says is due.

No daemon, no kopf timer and no deletion handler: kopf then never puts a finalizer on a job, so
deleting a job never waits for the operator (the owned children go with it by garbage
collection, even while the operator is down).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

import kopf
from kubernetes import client, config

from dj_operator.api import constants as c
from dj_operator.api.types import OperatorDefaults
from dj_operator.build import names
from dj_operator.handlers import reconcile as rec
from dj_operator.handlers.timers import TICK, Key, Timers
from dj_operator.kube import Kube
from dj_operator.metrics import default_metrics, instrument_api_client
from dj_operator.status import attempts as att
from dj_operator.status import times, wakeup
from dj_runner import contract

log = logging.getLogger(__name__)

#: Seconds before retrying a job whose reconcile failed, by consecutive failure.
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: kopf lists the watched resources in pages of this many objects at start-up.
LIST_CHUNK = 500
#: Threads running reconciles (kopf's executor): the work is mostly waiting on the API server.
RECONCILE_WORKERS = 32
#: Threads running the reconciles timers fire.
TIMER_WORKERS = 4


class State:
    """Process-wide state of the running operator (set up at startup)."""

    kube: Kube | None = None
    defaults: OperatorDefaults = OperatorDefaults()
    namespaces: tuple[str, ...] = ()
    timers: Timers | None = None
    settled: set[Key] = set()  # jobs finished or Suspended, as their last event showed
    failures: dict[Key, int] = {}  # consecutive failed reconciles per job
    running: set[Key] = set()  # jobs being reconciled now
    dirty: set[Key] = set()  # jobs to reconcile again once the running reconcile ends
    # Per job: the resourceVersion of its last status write, and the inputs that write saw.
    written: dict[Key, tuple[str, str]] = {}
    # Ray pods (by uid) whose deletion has woken their job once: later events of the same
    # deletion are the job's timers' to follow (`wakeup.next_check`); forgotten when it is gone.
    ray_pods_woken: set[str] = set()
    guard = threading.Lock()


def _kube() -> Kube:
    assert State.kube is not None, "the operator has not started"
    return State.kube


def _timers() -> Timers:
    assert State.timers is not None, "the operator has not started"
    return State.timers


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's bookkeeping under this project's prefix, from the first release.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=c.ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = c.FINALIZER
    # kopf's own log lines become Events only from WARNING up; our Events are posted by kube.py.
    settings.posting.level = logging.WARNING
    # Watch streams: bounded on both sides so a silent stream is noticed and restarted.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30
    # Framework errors back off and stop; domain retries live in status.
    settings.queueing.error_delays = [1, 2, 5, 10, 30]
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    # The initial listing of jobs, pods and RayClusters is paginated.
    settings.watching.chunk_size = LIST_CHUNK
    settings.execution.max_workers = RECONCILE_WORKERS
    settings.peering.standalone = True
    settings.peering.clusterwide = False
    # Watching named namespaces (the chart's namespaced Roles): nothing cluster-wide is granted,
    # so kopf must not watch CRDs and namespaces (it would retry 403s); it discovers the
    # resources once at startup. Namespace globs still need the namespaces watched.
    if State.namespaces and not any(ch in ns for ns in State.namespaces for ch in "*?[!"):
        settings.scanning.disabled = True
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    # One kept-alive connection per thread that calls the API (else each extra call opens and
    # discards a TLS connection).
    configuration.connection_pool_maxsize = RECONCILE_WORKERS + TIMER_WORKERS
    api = client.ApiClient(configuration)
    State.kube = Kube(instrument_api_client(api, default_metrics()))
    State.timers = Timers(lambda key: _reconcile(*key), workers=TIMER_WORKERS).start()


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    if State.timers is not None:
        State.timers.stop()


def _at(due: datetime) -> float:
    """A wall-clock instant as the timers' monotonic clock."""
    return time.monotonic() + max(0.0, (due - times.now()).total_seconds())


def _retry_later(key: Key) -> float:
    with State.guard:
        count = State.failures.get(key, 0)
        State.failures[key] = count + 1
    delay = RETRY_DELAYS[min(count, len(RETRY_DELAYS) - 1)]
    _timers().schedule(key, time.monotonic() + delay)
    return delay


def _reconcile(namespace: str, name: str) -> None:
    """Reconcile the job now or, while a reconcile of it runs, once more right after that one:
    events coalesce as in a work queue, and no thread waits for another's lock."""
    key = (namespace, name)
    with State.guard:
        if key in State.running:
            State.dirty.add(key)
            return
        State.running.add(key)
    try:
        while True:
            _reconcile_once(key)
            with State.guard:
                if key not in State.dirty:
                    State.running.discard(key)
                    return
                State.dirty.discard(key)
    except BaseException:
        with State.guard:
            State.running.discard(key)
        raise


def _reconcile_once(key: Key) -> None:
    """Reconcile; then set the job's timer to what is due next, or retry it with a backoff
    (never let kopf retry forever)."""
    namespace, name = key
    try:
        with default_metrics().reconcile("reconcile"):
            result = rec.reconcile(_kube(), namespace, name, State.defaults)
    except Exception:
        delay = _retry_later(key)
        log.exception("reconcile of %s/%s failed; retrying in %.0f s", namespace, name, delay)
        return
    if result.retry:
        _retry_later(key)
        return
    with State.guard:
        State.failures.pop(key, None)
        if result.written is not None:
            State.written[key] = (result.written, result.seen)
    if result.phase is None:
        _forget(key)
    elif result.due is not None:
        _timers().schedule(key, _at(result.due))
    else:
        _timers().cancel(key)


def _forget(key: Key) -> None:
    _timers().cancel(key)
    with State.guard:
        State.failures.pop(key, None)
        State.settled.discard(key)
        State.written.pop(key, None)
    rec.forget(*key)


@kopf.on.event(contract.GROUP, contract.VERSION, contract.PLURAL)
def job_event(type: str | None, body: Any, name: str, namespace: str, **_: Any) -> None:
    metrics = default_metrics()
    metrics.watch_event(contract.KIND)
    key = (namespace, name)
    if type == "DELETED":
        metrics.index.remove(namespace, name)
        _forget(key)
        return
    job = dict(body)
    metrics.index.upsert(job)
    with State.guard:
        version = (job.get("metadata") or {}).get("resourceVersion")
        echo = version is not None and State.written.get(key) == (version, rec.inputs(job))
    if echo:  # our own status write coming back, and nobody else's change folded into it
        return
    if wakeup.settled(job):
        with State.guard:
            State.settled.add(key)
        due = wakeup.ttl_due(job)
        if due is not None:
            _timers().schedule(key, _at(due))
        return
    with State.guard:
        State.settled.discard(key)
    _reconcile(namespace, name)


def _owner_job(body: Any) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == contract.KIND and ref.get("apiVersion", "").startswith(
            contract.GROUP + "/"
        ):
            return ref.get("name")
    return None


def _child_event(type: str | None, body: Any, namespace: str, active: bool) -> None:
    """A child changed: reconcile its job, unless this is kopf's listing replaying an idle
    child of a settled job (the start-up listing must not wake every finished job)."""
    job = _owner_job(body)
    if not job:
        return
    with State.guard:
        settled = (namespace, job) in State.settled
    if type is None and settled and not active:
        return
    _reconcile(namespace, job)


@kopf.on.event("v1", "pods", labels={contract.LABEL_MANAGED_BY: contract.OPERATOR_NAME})
def pod_event(type: str | None, body: Any, namespace: str, **_: Any) -> None:
    _child_event(type, body, namespace, att.pod_active(dict(body)))


@kopf.on.event(
    "ray.io", "v1", c.RAY_PLURAL, labels={contract.LABEL_MANAGED_BY: contract.OPERATOR_NAME}
)
def ray_event(type: str | None, body: Any, namespace: str, **_: Any) -> None:
    # A RayCluster of a settled job is left over (terminal and suspended jobs have none).
    _child_event(type, body, namespace, True)


@kopf.on.event(
    "v1", "pods", labels={contract.LABEL_COMPONENT: c.COMPONENT_RAY_NODE, c.LABEL_NAME: c.APP_NAME}
)
def ray_pod_event(type: str | None, body: Any, namespace: str, **_: Any) -> None:
    """A Ray pod being deleted: its job may be settled with no RayCluster left to tell of it
    (`wakeup.ray_pod_wakes`); once per pod's deletion."""
    pod = dict(body)
    uid = str((pod.get("metadata") or {}).get("uid"))
    job = names.ray_pod_job(pod)
    with State.guard:
        if type == "DELETED":
            State.ray_pods_woken.discard(uid)
            return
        if job is None or uid in State.ray_pods_woken:
            return
        settled = (namespace, job) in State.settled
        wakes = wakeup.ray_pod_wakes(type, pod, settled)
        if wakes:
            State.ray_pods_woken.add(uid)
    if wakes:
        _reconcile(namespace, job)


@kopf.on.probe(id="timers")
def timers_health(**_: Any) -> dict[str, Any]:
    """Liveness: the timer thread runs and ticks (it wakes every few seconds whatever the number
    of jobs); no pass over the jobs is involved."""
    timers = State.timers
    if timers is None:
        raise kopf.PermanentError("not started")
    age = timers.seconds_since_beat()
    if not timers.alive() or age > 6 * TICK:
        raise RuntimeError(f"the timer thread has not ticked in {age:.0f} s")
    return {"timers": len(timers.pending()), "settledJobs": len(State.settled)}
