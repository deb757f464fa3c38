"""The security contexts of the pods the operator builds: the restricted baseline (the Pod
Security Standard `restricted`) and how it merges with the installation's and the job's contexts.

Layers merge field by field, the later one winning on what it names and keeping the rest:
nested objects (`capabilities`, `seccompProfile`, `seLinuxOptions`) merge the same way, and
`capabilities.drop` is the union of every layer's. So a job's `runAsUser` never removes the
installation's `readOnlyRootFilesystem` or the baseline's capability drop. What a job may ask for
at all is the installation policy's decision (`dj_operator.policy`), made before any pod is built.
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]

#: Every container: no privilege escalation, no capability (PSA restricted).
RESTRICTED_CONTAINER: Obj = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
#: Every pod: a non-root user and the runtime's default seccomp profile (PSA restricted).
RESTRICTED_POD: Obj = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
# Fields of a PodSecurityContext that a container inherits unless it sets its own.
_INHERITED = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "seLinuxOptions")


def merge(*layers: Obj | None) -> Obj:
    """`layers` merged in order (None and {} are no-ops); the inputs are not modified."""
    out: Obj = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            old = out.get(key)
            if key == "drop" and isinstance(old, list) and isinstance(value, list):
                out[key] = list(dict.fromkeys([*old, *value]))
            elif isinstance(old, dict) and isinstance(value, dict):
                out[key] = merge(old, value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def container_context(*layers: Obj | None) -> Obj:
    """A container's securityContext: the restricted baseline, then `layers`.

    The baseline's `allowPrivilegeEscalation: false` gives way where a layer (that the policy
    allowed) makes the container privileged or adds CAP_SYS_ADMIN, which the API server refuses
    together with it; a container that runs as root (allowed by the policy) is not asked to run
    as non-root."""
    out = merge(RESTRICTED_CONTAINER, *layers)
    named_escalation = any("allowPrivilegeEscalation" in (layer or {}) for layer in layers)
    added = {cap.upper().removeprefix("CAP_") for cap in out["capabilities"].get("add") or []}
    if not named_escalation and (out.get("privileged") or "SYS_ADMIN" in added):
        del out["allowPrivilegeEscalation"]
    if out.get("runAsUser") == 0 and "runAsNonRoot" not in out:
        out["runAsNonRoot"] = False
    return out


def pod_context(*layers: Obj | None) -> Obj:
    """A pod's securityContext: the restricted baseline, then `layers` (a root user that the
    policy allowed drops the baseline's runAsNonRoot)."""
    out = merge(RESTRICTED_POD, *layers)
    named_non_root = any("runAsNonRoot" in (layer or {}) for layer in layers)
    if out.get("runAsUser") == 0 and not named_non_root:
        del out["runAsNonRoot"]
    return out


def effective(pod_context: Obj | None, container_context: Obj | None) -> Obj:
    """What a container runs with: the pod's inheritable fields under the container's own."""
    inherited = {k: v for k, v in (pod_context or {}).items() if k in _INHERITED}
    return merge(inherited, container_context)
