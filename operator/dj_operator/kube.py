"""All API-server I/O of the operator: reads, create-or-adopt, deletes, status patches, Events.

Create-or-adopt: a child has a deterministic name; a 409 on create means it exists, so it is read
and its owner checked. An object of the same name that this job does not own is never taken over:
that is a conflict the job reports.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from dj_operator.api import constants as c
from dj_operator.build import names
from dj_operator.events_catalog import EventGone, EventReason, EventRecorder
from dj_operator.metrics import default_metrics
from dj_runner import contract

Obj = dict[str, Any]
log = logging.getLogger(__name__)
REQUEST_TIMEOUT = (10, 30)  # connect, read


class ChildConflict(RuntimeError):
    """A child's name is taken by an object this job does not own."""


#: Codes of a refused create that the job reports (the rest are raised: a retry may pass).
REFUSED_CODES = (400, 403, 422)


class CreateRefused(RuntimeError):
    """The API server refused to create a child: 422/400 (invalid), 403 (quota, admission)."""

    def __init__(self, code: int, kind: str, name: str, message: str) -> None:
        super().__init__(f"{kind} {name}: {code} {message}")
        self.code = code
        self.kind = kind
        self.name = name
        self.message = message


def api_message(exc: ApiException) -> str:
    """The API server's own message of a refused request (its Status body), else the reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or exc.status)


@dataclass(frozen=True)
class Created:
    kind: str
    name: str
    created: bool  # False: it existed and is ours (adopted)


def _json(response: Any) -> Obj:
    return json.loads(response.data)


class Kube:
    """The API calls the operator makes, with plain dicts in and out."""

    def __init__(self, api: client.ApiClient, events: EventRecorder | None = None) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        if events is None:
            metrics = default_metrics()
            events = EventRecorder(
                EventSinkAPI(self.core),
                on_suppressed=metrics.event_suppressed,
                on_posted=metrics.event_posted,
            )
        self.events = events

    # -- reads --------------------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> Obj | None:
        try:
            return self.custom.get_namespaced_custom_object(
                contract.GROUP,
                contract.VERSION,
                namespace,
                contract.PLURAL,
                name,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _pods(self, namespace: str, selector: str) -> list[Obj]:
        return _json(
            self.core.list_namespaced_pod(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )["items"]

    def runner_pods(self, job: Obj) -> list[Obj]:
        meta = job["metadata"]
        selector = f"{contract.LABEL_JOB}={names.fit(meta['name'])},{contract.LABEL_COMPONENT}={contract.COMPONENT_RUNNER}"
        return [p for p in self._pods(meta["namespace"], selector) if names.is_owned_by(p, job)]

    def ray_pods(self, job: Obj) -> list[Obj]:
        """kuberay mode: the head and worker pods of the job's RayCluster (KubeRay labels them
        with the cluster's name)."""
        meta = job["metadata"]
        return self._pods(meta["namespace"], f"ray.io/cluster={names.ray_cluster(meta['name'])}")

    def get_ray_cluster(self, job: Obj) -> Obj | None:
        meta = job["metadata"]
        try:
            cluster = self.custom.get_namespaced_custom_object(
                "ray.io",
                "v1",
                meta["namespace"],
                c.RAY_PLURAL,
                names.ray_cluster(meta["name"]),
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cluster if names.is_owned_by(cluster, job) else None

    def config_map_key(self, namespace: str, name: str, key: str) -> str | None:
        """The value, or None when the ConfigMap or the key does not exist."""
        try:
            cm = _json(
                self.core.read_namespaced_config_map(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return (cm.get("data") or {}).get(key)

    def log_tail(self, namespace: str, pod: str, lines: int = 30) -> str:
        try:
            return self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=c.RUNNER_CONTAINER,
                tail_lines=lines,
                limit_bytes=8000,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            log.info("no log of %s/%s: %s", namespace, pod, exc.reason)
            return ""

    # -- create-or-adopt ----------------------------------------------------------------------

    def _create(self, obj: Obj) -> Obj:
        ns = obj["metadata"]["namespace"]
        kind = obj["kind"]
        kw: dict[str, Any] = {"_request_timeout": REQUEST_TIMEOUT, "field_manager": c.FIELD_MANAGER}
        if kind == "ConfigMap":
            return _json(
                self.core.create_namespaced_config_map(ns, obj, _preload_content=False, **kw)
            )
        if kind == "PersistentVolumeClaim":
            return _json(
                self.core.create_namespaced_persistent_volume_claim(
                    ns, obj, _preload_content=False, **kw
                )
            )
        if kind == "ServiceAccount":
            return _json(
                self.core.create_namespaced_service_account(ns, obj, _preload_content=False, **kw)
            )
        if kind == "Pod":
            return _json(self.core.create_namespaced_pod(ns, obj, _preload_content=False, **kw))
        if kind == "Role":
            return _json(self.rbac.create_namespaced_role(ns, obj, _preload_content=False, **kw))
        if kind == "RoleBinding":
            return _json(
                self.rbac.create_namespaced_role_binding(ns, obj, _preload_content=False, **kw)
            )
        if kind == "NetworkPolicy":
            return _json(
                self.networking.create_namespaced_network_policy(
                    ns, obj, _preload_content=False, **kw
                )
            )
        if kind == c.RAY_KIND:
            return self.custom.create_namespaced_custom_object(
                "ray.io", "v1", ns, c.RAY_PLURAL, obj, field_validation="Strict", **kw
            )
        raise ValueError(f"no create for {kind}")

    def _read(self, obj: Obj) -> Obj:
        ns, name, kind = obj["metadata"]["namespace"], obj["metadata"]["name"], obj["kind"]
        kw: dict[str, Any] = {"_request_timeout": REQUEST_TIMEOUT}
        if kind == "ConfigMap":
            return _json(
                self.core.read_namespaced_config_map(name, ns, _preload_content=False, **kw)
            )
        if kind == "PersistentVolumeClaim":
            return _json(
                self.core.read_namespaced_persistent_volume_claim(
                    name, ns, _preload_content=False, **kw
                )
            )
        if kind == "ServiceAccount":
            return _json(
                self.core.read_namespaced_service_account(name, ns, _preload_content=False, **kw)
            )
        if kind == "Pod":
            return _json(self.core.read_namespaced_pod(name, ns, _preload_content=False, **kw))
        if kind == "Role":
            return _json(self.rbac.read_namespaced_role(name, ns, _preload_content=False, **kw))
        if kind == "RoleBinding":
            return _json(
                self.rbac.read_namespaced_role_binding(name, ns, _preload_content=False, **kw)
            )
        if kind == "NetworkPolicy":
            return _json(
                self.networking.read_namespaced_network_policy(
                    name, ns, _preload_content=False, **kw
                )
            )
        if kind == c.RAY_KIND:
            return self.custom.get_namespaced_custom_object(
                "ray.io", "v1", ns, c.RAY_PLURAL, name, **kw
            )
        raise ValueError(f"no read for {kind}")

    def create_or_adopt(self, obj: Obj, job: Obj) -> Created:
        """Create `obj`; if it exists, adopt it when this job owns it (or labelled it, for a
        claim the job does not own), else raise ChildConflict. A create refused with 400, 403
        or 422 raises CreateRefused with the API server's message."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        try:
            self._create(obj)
            return Created(kind, name, True)
        except ApiException as exc:
            if exc.status in REFUSED_CODES:
                raise CreateRefused(exc.status, kind, name, api_message(exc)) from exc
            if exc.status != 409:
                raise
        existing = self._read(obj)
        owned = names.is_owned_by(existing, job)
        if owned and obj["kind"] == "ConfigMap" and existing.get("data") != obj.get("data"):
            # The recipe changed (allowed while suspended): the next attempt must read the new one.
            self.core.patch_namespaced_config_map(
                name,
                obj["metadata"]["namespace"],
                {"data": obj["data"]},
                _request_timeout=REQUEST_TIMEOUT,
            )
            return Created(kind, name, False)
        labelled = (existing["metadata"].get("labels") or {}).get(contract.LABEL_JOB) == names.fit(
            job["metadata"]["name"]
        )
        expects_owner = bool(obj["metadata"].get("ownerReferences"))
        if owned or (not expects_owner and labelled):
            return Created(kind, name, False)
        raise ChildConflict(
            f"{kind} {job['metadata']['namespace']}/{name} exists and does not belong to"
            f" DataJuicerJob {job['metadata']['name']}; delete or rename it"
        )

    # -- deletes ------------------------------------------------------------------------------

    def delete_pod(
        self, namespace: str, name: str, grace_period_seconds: int | None = None
    ) -> None:
        """Delete a pod (with its own grace period unless one is given; 0: at once)."""
        try:
            self.core.delete_namespaced_pod(
                name,
                namespace,
                grace_period_seconds=grace_period_seconds,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_ray_cluster(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                "ray.io", "v1", namespace, c.RAY_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                contract.GROUP,
                contract.VERSION,
                namespace,
                contract.PLURAL,
                name,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- status and events --------------------------------------------------------------------

    def patch_status(self, namespace: str, name: str, status: Obj) -> str | None:
        """Merge-patch the operator-owned status fields (never `progress`); return the job's
        resourceVersion after the patch."""
        # A merge patch: the endpoint's only content type in the pinned client (kubernetes 35).
        patched = self.custom.patch_namespaced_custom_object_status(
            contract.GROUP,
            contract.VERSION,
            namespace,
            contract.PLURAL,
            name,
            {"status": status},
            field_manager=c.FIELD_MANAGER,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return (patched.get("metadata") or {}).get("resourceVersion") if patched else None

    def emit_event(self, job: Obj, reason: EventReason, message: str) -> None:
        """Post a catalog Event on ``job`` through the deduplicating, rate-limited recorder.

        Events are best effort: a refused post is logged, never raised into a reconcile (a
        failed Event must not keep a job's status from being written).
        """
        try:
            self.events.record(job, reason, message)
        except ApiException as exc:
            meta = job["metadata"]
            log.warning(
                "event %s on %s/%s not posted: %s",
                reason.name,
                meta["namespace"],
                meta["name"],
                exc.reason,
            )


class EventSinkAPI:
    """The recorder's API-server calls: create an Event (bumping one that already exists, as
    after an operator restart) and raise an Event's count."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core

    def create(self, body: Obj) -> int:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            self.core.create_namespaced_event(namespace, body, _request_timeout=REQUEST_TIMEOUT)
            return 1
        except ApiException as exc:
            if exc.status != 409:
                raise
        old = self.core.read_namespaced_event(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        count = (old.count or 1) + 1
        self.bump(namespace, name, count, body["lastTimestamp"])
        return count

    def bump(self, namespace: str, name: str, count: int, last_timestamp: str) -> None:
        try:
            self.core.patch_namespaced_event(
                name,
                namespace,
                {"count": count, "lastTimestamp": last_timestamp},
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise EventGone(name) from None
            raise
