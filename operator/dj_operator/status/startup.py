"""Why a job's pods do not start: read from the pods (and a refused create), never guessed.

``pod_blocker(pod)`` reads one pod as the API server reports it: a container (or init container)
waiting for a reason that does not clear by itself (``constants.WAITING_BLOCKED``: an image that
cannot be pulled, a missing Secret or ConfigMap key, ...) or a PodScheduled condition that is
False (Unschedulable). ``first_blocker`` picks the first of a list of pods (the runner pods, then
the Ray head and worker pods in kuberay mode). ``Refusal`` is a create the API server refused
(its code and message), as the handler caught it. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dj_operator.api import constants as c

Obj = dict[str, Any]


@dataclass(frozen=True)
class Blocker:
    """What keeps one pod (or a create) from starting: a Blocked condition's reason, message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Refusal:
    """A create the API server refused: the HTTP code, the object, the server's message."""

    code: int
    kind: str
    name: str
    message: str

    @property
    def invalid(self) -> bool:
        """422 (or 400): the object itself is invalid; a retry would be refused again."""
        return self.code in (400, 422)

    def describe(self) -> str:
        return f"the API server refused to create {self.kind} {self.name} ({self.code}): {self.message}"


def _waiting(pod: Obj) -> tuple[str, str, str] | None:
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in c.WAITING_BLOCKED:
                return str(cs.get("name")), waiting["reason"], str(waiting.get("message") or "")
    return None


def pod_blocker(pod: Obj) -> Blocker | None:
    """Why this pod cannot start, or None (running, finished, or merely on its way)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed") or pod["metadata"].get("deletionTimestamp"):
        return None
    name = pod["metadata"]["name"]
    waiting = _waiting(pod)
    if waiting is not None:
        container, reason, message = waiting
        detail = f": {message}" if message else ""
        return Blocker(reason, f"pod {name}, container {container}: {reason}{detail}")
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == c.B_UNSCHEDULABLE
        ):
            detail = f": {cond['message']}" if cond.get("message") else ""
            return Blocker(c.B_UNSCHEDULABLE, f"pod {name} cannot be scheduled{detail}")
    return None


def first_blocker(pods: list[Obj]) -> Blocker | None:
    for pod in pods:
        found = pod_blocker(pod)
        if found is not None:
            return found
    return None


def pending_reason(pod: Obj) -> str:
    """A short account of a pod that is not running yet, for the Running condition's message."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "False" and cond.get("message"):
            return f"{cond.get('type')}: {cond['message']}"
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                return f"container {cs.get('name')} {waiting['reason']}"
    return f"pod phase {status.get('phase') or 'unknown'}"
