"""The kopf registrations: settings at startup, watch events that trigger a reconcile, a probe.

No daemon, no timer and no deletion handler: kopf then never puts a finalizer on a job, so
deleting a job never waits for the operator (the owned children go with it by garbage
collection, even while the operator is down). Deadlines, TTLs and lost watch events are caught
by a resync loop (`resync.py`) that reconciles every live job every few seconds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from kubernetes import client, config

from dj_operator.api import constants as c
from dj_operator.api.types import OperatorDefaults
from dj_operator.handlers import reconcile as rec
from dj_operator.handlers.resync import Resync
from dj_operator.kube import Kube
from dj_operator.metrics import default_metrics, instrument_api_client
from dj_runner import contract

log = logging.getLogger(__name__)


class State:
    """Process-wide state of the running operator (set up at startup)."""

    kube: Kube | None = None
    defaults: OperatorDefaults = OperatorDefaults()
    resync: Resync | None = None
    namespaces: tuple[str, ...] = ()
    resync_seconds: float = 5.0
    last_event: float = 0.0
    started: float = time.monotonic()


def _kube() -> Kube:
    assert State.kube is not None, "the operator has not started"
    return State.kube


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
    State.kube = Kube(instrument_api_client(client.ApiClient(), default_metrics()))
    State.resync = Resync(State.kube, State.namespaces, State.resync_seconds, State.defaults)
    State.resync.start()


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    if State.resync is not None:
        State.resync.stop()


def _reconcile(namespace: str, name: str) -> None:
    State.last_event = time.monotonic()
    try:
        with default_metrics().reconcile("reconcile"):
            rec.reconcile(_kube(), namespace, name, State.defaults)
    except Exception:  # the resync loop retries; never let kopf retry forever
        log.exception("reconcile of %s/%s failed; the resync loop retries it", namespace, name)


@kopf.on.event(contract.GROUP, contract.VERSION, contract.PLURAL)
def job_event(type: str | None, body: Any, name: str, namespace: str, **_: Any) -> None:
    metrics = default_metrics()
    metrics.watch_event(contract.KIND)
    if type == "DELETED":
        metrics.index.remove(namespace, name)
        rec.forget(namespace, name)
        return
    metrics.index.upsert(dict(body))
    _reconcile(namespace, name)


def _owner_job(body: Any) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == contract.KIND and ref.get("apiVersion", "").startswith(
            contract.GROUP + "/"
        ):
            return ref.get("name")
    return None


@kopf.on.event("v1", "pods", labels={contract.LABEL_MANAGED_BY: contract.OPERATOR_NAME})
def pod_event(body: Any, namespace: str, **_: Any) -> None:
    job = _owner_job(body)
    if job:
        _reconcile(namespace, job)


@kopf.on.event(
    "ray.io", "v1", "rayclusters", labels={contract.LABEL_MANAGED_BY: contract.OPERATOR_NAME}
)
def ray_event(body: Any, namespace: str, **_: Any) -> None:
    job = _owner_job(body)
    if job:
        _reconcile(namespace, job)


@kopf.on.probe(id="resync")
def resync_health(**_: Any) -> dict[str, Any]:
    """Liveness: the resync loop must have completed a pass recently."""
    resync = State.resync
    if resync is None:
        raise kopf.PermanentError("not started")
    age = resync.seconds_since_pass()
    if age > max(60.0, 10 * State.resync_seconds):
        raise RuntimeError(f"the resync loop has not completed a pass in {age:.0f} s")
    return {"lastPassSecondsAgo": round(age, 1), "jobs": resync.jobs_seen}
