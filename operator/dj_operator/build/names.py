"""Deterministic child names, labels and owner references."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from dj_operator.api import constants as c
from dj_runner import contract

Obj = dict[str, Any]
MAX_NAME = 63  # a DNS label: pods, services, label values
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def fit(name: str, limit: int = MAX_NAME) -> str:
    """`name` itself when it fits `limit`, else a prefix plus a short hash of the whole name."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def dns1035(name: str, limit: int = MAX_NAME) -> str:
    """`name` as a DNS-1035 label (a lower-case letter first, then letters, digits and '-') of at
    most `limit` characters: `name` itself when it is one, else a cleaned prefix (dots and other
    characters as '-', "dj-" before a leading digit) plus a short hash of the whole name, so that
    names differing only in what was cleaned stay distinct. A job's name is a DNS-1123 subdomain
    (it may hold dots and start with a digit); RayCluster names must be DNS-1035 labels."""
    if len(name) <= limit and _DNS1035.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    clean = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if not clean[:1].isalpha():
        clean = f"dj-{clean}"
    return f"{clean[: limit - 9].rstrip('-')}-{digest}"


def runner_pod(job: str, attempt: int) -> str:
    suffix = f"-runner-{attempt}"
    return fit(job, MAX_NAME - len(suffix)) + suffix


def config_map(job: str) -> str:
    return fit(f"{job}-recipe", 253)


def claim(job: str) -> str:
    return fit(f"{job}-data", 253)


def service_account(job: str) -> str:
    return fit(f"{job}-runner", 253)


def ray_cluster(job: str) -> str:
    # A DNS-1035 label (KubeRay refuses other names); KubeRay derives Service names from it
    # (contract.RAY_HEAD_SERVICE_SUFFIX): keep room for it.
    return dns1035(f"{job}-ray", 47)


def ray_service_account(job: str) -> str:
    """The identity of the Ray head and workers: no API token, no Role."""
    return fit(f"{job}-ray", 253)


def network_policy(job: str) -> str:
    """The job's NetworkPolicy: suffixed like every other child, so that a policy of the user's
    named after the job is never taken for it."""
    return fit(f"{job}-ingress", 253)


def job_id(namespace: str, job: str, uid: str) -> str:
    """The runner's --job-id: stable for the life of the job, distinct for a re-created one."""
    return f"{namespace}-{job}-{uid[:8]}"


def labels(job: str, component: str) -> dict[str, str]:
    return {
        contract.LABEL_MANAGED_BY: contract.OPERATOR_NAME,
        c.LABEL_NAME: c.APP_NAME,
        contract.LABEL_COMPONENT: component,
        contract.LABEL_JOB: fit(job),
    }


def ray_pod_job(pod: Obj) -> str | None:
    """The name of the job a Ray pod belongs to: its `ANNOTATION_JOB`, else its job label when
    that is a whole name (a pod of an older operator; a fitted label ends in a hash)."""
    meta = pod.get("metadata") or {}
    name = (meta.get("annotations") or {}).get(c.ANNOTATION_JOB)
    if name:
        return str(name)
    label = (meta.get("labels") or {}).get(contract.LABEL_JOB)
    return str(label) if label and len(label) < MAX_NAME else None


def owner_reference(job: Obj, controller: bool = True) -> Obj:
    meta = job["metadata"]
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def metadata(job: Obj, name: str, component: str, owned: bool = True, **extra_labels: str) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": job["metadata"]["namespace"],
        "labels": {**labels(job["metadata"]["name"], component), **extra_labels},
    }
    if owned:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


def is_owned_by(obj: Obj, job: Obj) -> bool:
    uid = job["metadata"]["uid"]
    return any(
        ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )
