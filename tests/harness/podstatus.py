"""A pod's status as a kubelet reports it, rendered from the state of its containers.

Pure: no processes, no API. `ContainerRun` is the record the pod runner keeps for each container;
`PodStatusRenderer.render` turns the runner's stage and its containers into the `status` of the
pod (phase, conditions with their transition times, container statuses).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
# The runner's stages, in order: prepare (volumes, identity) -> init -> main -> done.
STAGES = ("prepare", "init", "main", "done")
NODE_ADDRESS = "127.0.0.1"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def waiting(reason: str, message: str | None = None) -> Obj:
    """A container `state` that is waiting for `reason`."""
    entry: Obj = {"reason": reason}
    if message:
        entry["message"] = message
    return {"waiting": entry, "running": None, "terminated": None}


@dataclass
class ContainerRun:
    """The life of one container of the pod. `proc` is the running container (with a `pid`)."""

    spec: Obj
    init: bool
    restart_count: int = 0
    proc: Any = None
    generation: int = 0
    state: Obj = field(default_factory=lambda: waiting("ContainerCreating"))
    last_state: Obj = field(default_factory=dict)
    started_mono: float = 0.0
    next_start: float | None = None
    streak: int = 0
    finished: bool = False
    exit_code: int | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])


def pod_phase(stage: str, inits: list[ContainerRun], mains: list[ContainerRun]) -> str:
    """The pod phase of a runner in `stage` with these containers."""
    if stage in ("prepare", "init"):
        return "Pending"
    if stage == "done":
        if any(r.init and r.finished and r.exit_code != 0 for r in inits):
            return "Failed"
        return "Succeeded" if all(r.exit_code == 0 for r in mains) else "Failed"
    if any(r.proc is None and r.exit_code is None and not r.last_state for r in mains):
        return "Pending"  # a container has not started yet, as a kubelet counts it
    return "Running"


def container_status(run: ContainerRun) -> Obj:
    running = run.state.get("running") is not None and run.proc is not None
    status: Obj = {
        "name": run.name,
        "image": run.spec.get("image", ""),
        "imageID": "",
        "ready": running and not run.init,
        "started": running,
        "restartCount": run.restart_count,
        "state": run.state,
        "lastState": run.last_state or {"waiting": None, "running": None, "terminated": None},
    }
    if run.proc is not None:
        status["containerID"] = f"process://{run.proc.pid}"
    return status


class PodStatusRenderer:
    """Renders a pod's status, remembering when each condition last changed."""

    def __init__(self) -> None:
        self._conditions: dict[str, tuple[str, str]] = {}

    def _condition(self, kind: str, ok: bool, reason: str | None = None) -> Obj:
        value = "True" if ok else "False"
        seen = self._conditions.get(kind)
        if seen is None or seen[0] != value:
            seen = self._conditions[kind] = (value, now_rfc3339())
        entry: Obj = {"type": kind, "status": value, "lastTransitionTime": seen[1]}
        if reason and not ok:
            entry["reason"] = reason
        return entry

    def render(
        self,
        stage: str,
        inits: list[ContainerRun],
        mains: list[ContainerRun],
        start_time: str,
        phase: str | None = None,
    ) -> Obj:
        """The pod's status; `phase` overrides the computed one (the terminal status on delete)."""
        phase = phase or pod_phase(stage, inits, mains)
        ready = phase == "Running" and all(
            r.proc is not None and r.state.get("running") for r in mains
        )
        started = stage != "prepare"
        initialized = stage in ("main", "done") and not any(
            r.exit_code not in (0, None) and r.finished for r in inits
        )
        not_ready = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        cond = self._condition
        status: Obj = {
            "phase": phase,
            "hostIP": NODE_ADDRESS,
            "hostIPs": [{"ip": NODE_ADDRESS}],
            "podIP": NODE_ADDRESS,
            "podIPs": [{"ip": NODE_ADDRESS}],
            "startTime": start_time,
            "conditions": [
                cond("PodReadyToStartContainers", started),
                cond("Initialized", initialized, "ContainersNotInitialized"),
                cond("ContainersReady", ready, not_ready),
                cond("Ready", ready, not_ready),
                cond("PodScheduled", True),
            ],
            "containerStatuses": [container_status(r) for r in mains],
        }
        if inits:
            status["initContainerStatuses"] = [container_status(r) for r in inits]
        return status
