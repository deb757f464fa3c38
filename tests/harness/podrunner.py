"""One pod on the process node: its containers run as local process groups, its status is real.

A PodRunner is a thread. It prepares the pod directory (volumes, the service-account kubeconfig),
runs init containers in order, then the containers, restarts them as `restartPolicy` says (with a
capped exponential back-off), and reports every change to the pod's status as a kubelet would.
On deletion it sends SIGTERM to each container's process group, waits for the grace period, sends
SIGKILL, reports the terminal status and removes the pod.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.containers import ContainerRuntime
from tests.harness.kubeconfig import write_kubeconfig
from tests.harness.podenv import ConfigError, PathMapper, command_line, resolve_env
from tests.harness.rest import ApiError, Rest
from tests.harness.volumes import (
    VolumeBuilder,
    VolumeNotReady,
    container_mounts,
    service_account_token,
)

Obj = dict[str, Any]
KUBECONFIG_TOKEN_SECONDS = 86400
START_ERROR_CODE = 128
CONFIG_RETRY_SECONDS = 1.0


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class NodeContext:
    """What a pod runner needs from its node."""

    rest: Rest
    node_name: str
    server: str
    ca_pem: bytes
    base_env: Mapping[str, str]
    backoff_initial: float
    backoff_max: float
    log: logging.Logger
    containers: ContainerRuntime | None = None  # container mode: podman runs each container


@dataclass
class ContainerRun:
    """The life of one container of the pod."""

    spec: Obj
    init: bool
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    generation: int = 0
    state: Obj = field(default_factory=lambda: _waiting("ContainerCreating"))
    last_state: Obj = field(default_factory=dict)
    started_mono: float = 0.0
    next_start: float | None = None
    streak: int = 0
    finished: bool = False
    exit_code: int | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])


def _waiting(reason: str, message: str | None = None) -> Obj:
    waiting: Obj = {"reason": reason}
    if message:
        waiting["message"] = message
    return {"waiting": waiting, "running": None, "terminated": None}


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class PodRunner(threading.Thread):
    """Runs one pod bound to the process node."""

    def __init__(self, ctx: NodeContext, pod: Obj, pod_dir: Path) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}-{meta['name']}", daemon=True)
        self.ctx = ctx
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = pod_dir
        self.policy: str = pod["spec"].get("restartPolicy", "Always")
        self.inits = [ContainerRun(c, True) for c in pod["spec"].get("initContainers") or []]
        self.mains = [ContainerRun(c, False) for c in pod["spec"]["containers"]]
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.done = threading.Event()
        self.stage = "prepare"  # prepare -> init -> main -> done
        self.init_index = 0
        self.prepare_message = ""
        self.volumes: dict[str, Path] = {}
        self.kubeconfig: Path | None = None
        self.start_time = now_rfc3339()
        self.deleting: float | None = None  # grace seconds once deletion was requested
        self._published: Obj | None = None
        self._conditions: dict[str, tuple[str, str]] = {}
        self._next_prepare = 0.0

    # -- requests from the node (any thread) --------------------------------------------------

    def request_delete(self, grace: float) -> None:
        self.events.put(("delete", grace))

    def removed(self) -> None:
        """The pod is gone from the API: kill everything, report nothing."""
        self.events.put(("removed",))

    def stop(self) -> None:
        """The node is stopping: kill everything, report nothing."""
        self.events.put(("removed",))

    def kill(self, sig: int = signal.SIGKILL, container: str | None = None) -> int:
        """Send `sig` to a running container's process group; return its pid."""
        run = self._find(container)
        proc = run.proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(
                f"container {run.name} of {self.namespace}/{self.pod_name} is not running"
            )
        os.killpg(proc.pid, sig)
        return proc.pid

    def pid(self, container: str | None = None) -> int | None:
        proc = self._find(container).proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def log_path(self, container: str | None = None, previous: bool = False) -> Path:
        run = self._find(container)
        attempt = run.restart_count - 1 if previous else run.restart_count
        return self.dir / "logs" / run.name / f"{max(attempt, 0)}.log"

    def _find(self, container: str | None) -> ContainerRun:
        for run in self.mains + self.inits:
            if container is None or run.name == container:
                return run
        raise KeyError(f"no container {container!r} in {self.namespace}/{self.pod_name}")

    # -- the thread --------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except Exception:
            self.ctx.log.exception("pod %s/%s: runner failed", self.namespace, self.pod_name)
            self._kill_all()
        finally:
            self.done.set()

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            if self.deleting is not None:
                self._terminate(self.deleting)
                return
            self._advance(now)
            if not self._publish():
                self._kill_all()
                return
            if self.stage == "done":
                return
            try:
                event = self.events.get(timeout=self._timeout(time.monotonic()))
            except queue.Empty:
                continue
            if not self._handle(event):
                self._kill_all()
                return

    def _timeout(self, now: float) -> float | None:
        due = [r.next_start for r in self.inits + self.mains if r.next_start is not None]
        if self.stage == "prepare":
            due.append(self._next_prepare)
        if not due:
            return None
        return max(0.0, min(due) - now)

    def _handle(self, event: tuple[Any, ...]) -> bool:
        """Apply one event; False means the pod is gone and the runner must stop now."""
        kind = event[0]
        if kind == "removed":
            return False
        if kind == "delete":
            self.deleting = float(event[1])
        elif kind == "exit":
            _, run, generation, code, reason, message = event
            if generation == run.generation:
                self._exited(run, code, reason, message)
        return True

    # -- stages ------------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if self.stage == "prepare":
            if now < self._next_prepare:
                return
            try:
                self._prepare()
            except (VolumeNotReady, ConfigError, ApiError) as exc:
                self.prepare_message = str(exc)
                self._next_prepare = now + CONFIG_RETRY_SECONDS
                for run in self.inits + self.mains:
                    run.state = _waiting("ContainerCreating", self.prepare_message)
                return
            self.stage = "init" if self.inits else "main"
            if self.stage == "init":
                self.inits[0].next_start = now
            else:
                for run in self.mains:
                    run.next_start = now
        for run in self.inits + self.mains:
            if run.next_start is not None and run.next_start <= now:
                run.next_start = None
                self._start(run)

    def _prepare(self) -> None:
        (self.dir / "rootfs").mkdir(parents=True, exist_ok=True)
        self.volumes = VolumeBuilder(self.ctx.rest, self.pod, self.dir).build()
        if self.pod["spec"].get("automountServiceAccountToken") is not False:
            sa = self.pod["spec"].get("serviceAccountName") or "default"
            token = service_account_token(self.ctx.rest, self.pod, None, KUBECONFIG_TOKEN_SECONDS)
            self.kubeconfig = write_kubeconfig(
                self.dir / "kubeconfig",
                self.ctx.server,
                self.ctx.ca_pem,
                f"system:serviceaccount:{self.namespace}:{sa}",
                token=token,
                namespace=self.namespace,
            )

    def _lookup(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.ctx.rest.get_or_none(f"/api/v1/namespaces/{namespace}/{kind}/{name}")

    def _start(self, run: ContainerRun) -> None:
        """Start one container; a start that fails is reported as a kubelet StartError."""
        spec = run.spec
        mounts = container_mounts(spec, self.volumes)
        mapper = PathMapper(mounts)
        base = dict(self.ctx.base_env)
        base.update(
            {
                "HOSTNAME": self.pod_name,
                "KPN_POD_DIR": str(self.dir),
                "KPN_MOUNTS": mapper.as_json(),
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": self.ctx.server.rsplit(":", 1)[1],
            }
        )
        if self.kubeconfig is not None:
            base["KUBECONFIG"] = str(self.kubeconfig)
        try:
            env = resolve_env(self.pod, spec, base, self._lookup, mapper)
            podman = None
            if self.ctx.containers is not None:
                podman = self.ctx.containers.command(
                    self.pod, spec, self._lookup, self.volumes, self.ctx.server, self.kubeconfig
                )
        except (ConfigError, ApiError) as exc:
            run.state = _waiting("CreateContainerConfigError", str(exc))
            run.next_start = time.monotonic() + CONFIG_RETRY_SECONDS
            return
        if run.state.get("terminated") or run.last_state or run.exit_code is not None:
            run.restart_count += 1
        run.generation += 1
        run.exit_code = None
        argv = command_line(spec, env, mapper)
        if podman is not None:
            argv, env = podman
        workdir = spec.get("workingDir")
        cwd = self.dir / "rootfs"
        if workdir:
            cwd = mapper.local(workdir) or self.dir / "rootfs" / workdir.lstrip("/")
        cwd.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(run.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = now_rfc3339()
        run.started_mono = time.monotonic()
        if not argv:
            self._start_failed(run, started, "no command: the process node runs only `command`")
            return
        try:
            with log_path.open("ab") as out:
                run.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            reason = "executable file not found in $PATH"
            if not isinstance(exc, FileNotFoundError):
                reason = exc.strerror or str(exc)
            self._start_failed(
                run,
                started,
                "failed to create containerd task: failed to create shim task: OCI runtime "
                "create failed: runc create failed: unable to start container process: "
                f'exec: "{argv[0]}": {reason}: unknown',
            )
            return
        run.state = {"waiting": None, "running": {"startedAt": started}, "terminated": None}
        self.ctx.log.info(
            "pod %s/%s: started %s (pid %d, restart %d): %s",
            self.namespace,
            self.pod_name,
            run.name,
            run.proc.pid,
            run.restart_count,
            argv,
        )
        threading.Thread(
            target=self._wait_process, args=(run, run.proc, run.generation), daemon=True
        ).start()

    def _start_failed(self, run: ContainerRun, started: str, message: str) -> None:
        self.ctx.log.info(
            "pod %s/%s: %s cannot run: %s", self.namespace, self.pod_name, run.name, message
        )
        run.state = {"waiting": None, "running": {"startedAt": started}, "terminated": None}
        self._exited(run, START_ERROR_CODE, "StartError", message)

    def _wait_process(self, run: ContainerRun, proc: subprocess.Popen[bytes], gen: int) -> None:
        returncode = proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the container ends with its main process
        if self.ctx.containers is not None:
            self.ctx.containers.cleanup(self.pod, run.spec)
        code = _exit_code(returncode)
        self.events.put(("exit", run, gen, code, "Completed" if code == 0 else "Error", None))

    def _exited(self, run: ContainerRun, code: int, reason: str, message: str | None) -> None:
        now = time.monotonic()
        started = (run.state.get("running") or {}).get("startedAt") or now_rfc3339()
        terminated: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }
        if message:
            terminated["message"] = message
        if run.proc is not None:
            terminated["containerID"] = f"process://{run.proc.pid}"
        run.proc = None
        run.exit_code = code
        run.state = {"waiting": None, "running": None, "terminated": terminated}
        self.ctx.log.info(
            "pod %s/%s: %s exited %d (%s)", self.namespace, self.pod_name, run.name, code, reason
        )
        if self.deleting is not None:
            run.finished = True
            return
        if run.init:
            if code == 0:
                run.finished = True
                self.init_index += 1
                if self.init_index < len(self.inits):
                    self.inits[self.init_index].next_start = now
                else:
                    self.stage = "main"
                    for main in self.mains:
                        main.next_start = now
                return
            restart = self.policy != "Never"
        else:
            restart = self.policy == "Always" or (self.policy == "OnFailure" and code != 0)
        if not restart:
            run.finished = True
            if run.init or all(r.finished for r in self.mains):
                self.stage = "done"
            return
        if now - run.started_mono > 2 * self.ctx.backoff_max:
            run.streak = 0
        delay = 0.0
        if run.streak > 0:
            delay = min(self.ctx.backoff_max, self.ctx.backoff_initial * 2 ** (run.streak - 1))
        run.streak += 1
        run.next_start = now + delay
        run.last_state = {"terminated": terminated}
        if delay > 0:
            run.state = _waiting(
                "CrashLoopBackOff",
                f"back-off {delay:g}s restarting failed container={run.name} "
                f"pod={self.pod_name}_{self.namespace}({self.uid})",
            )

    # -- deletion ----------------------------------------------------------------------------

    def _running(self) -> list[ContainerRun]:
        return [r for r in self.inits + self.mains if r.proc is not None]

    def _terminate(self, grace: float) -> None:
        """SIGTERM, the grace period, SIGKILL; then the terminal status; then remove the pod."""
        self.ctx.log.info("pod %s/%s: deleting, grace %gs", self.namespace, self.pod_name, grace)
        for run in self.inits + self.mains:
            run.next_start = None
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        if not self._drain_until(deadline):
            return
        if self._running():
            self._signal_all(signal.SIGKILL)
            if not self._drain_until(time.monotonic() + 10):
                return
        ran = [r for r in self.mains if r.exit_code is not None]
        succeeded = bool(ran) and all(r.exit_code == 0 for r in ran)
        self.stage = "done"
        self._publish(phase="Succeeded" if succeeded else "Failed")
        with contextlib.suppress(ApiError):
            self.ctx.rest.delete(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                },
            )

    def _drain_until(self, deadline: float) -> bool:
        """Handle exit events until nothing runs or the deadline; False if the pod vanished."""
        while self._running():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                return True
            if event[0] == "removed":
                self._kill_all()
                return False
            if event[0] == "exit":
                _, run, generation, code, reason, message = event
                if generation == run.generation:
                    self._exited(run, code, reason, message)
        return True

    def _signal_all(self, sig: int) -> None:
        for run in self._running():
            assert run.proc is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.proc.pid, sig)

    def _kill_all(self) -> None:
        for run in self.inits + self.mains:
            run.next_start = None
        self._signal_all(signal.SIGKILL)

    # -- status ------------------------------------------------------------------------------

    def _phase(self) -> str:
        if self.stage in ("prepare", "init"):
            return "Pending"
        if self.stage == "done":
            if any(r.init and r.finished and r.exit_code != 0 for r in self.inits):
                return "Failed"
            return "Succeeded" if all(r.exit_code == 0 for r in self.mains) else "Failed"
        if any(r.proc is None and r.exit_code is None and not r.last_state for r in self.mains):
            return "Pending"  # a container has not started yet, as a kubelet counts it
        return "Running"

    def _container_status(self, run: ContainerRun) -> Obj:
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

    def status(self, phase: str | None = None) -> Obj:
        phase = phase or self._phase()
        ready = phase == "Running" and all(
            r.proc is not None and r.state.get("running") for r in self.mains
        )

        def cond(kind: str, ok: bool, reason: str | None = None) -> Obj:
            value = "True" if ok else "False"
            seen = self._conditions.get(kind)
            if seen is None or seen[0] != value:
                seen = self._conditions[kind] = (value, now_rfc3339())
            entry: Obj = {"type": kind, "status": value, "lastTransitionTime": seen[1]}
            if reason and not ok:
                entry["reason"] = reason
            return entry

        started = self.stage != "prepare"
        initialized = self.stage in ("main", "done") and not any(
            r.exit_code not in (0, None) and r.finished for r in self.inits
        )
        not_ready = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        status: Obj = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": [
                cond("PodReadyToStartContainers", started),
                cond("Initialized", initialized, "ContainersNotInitialized"),
                cond("ContainersReady", ready, not_ready),
                cond("Ready", ready, not_ready),
                cond("PodScheduled", True),
            ],
            "containerStatuses": [self._container_status(r) for r in self.mains],
        }
        if self.inits:
            status["initContainerStatuses"] = [self._container_status(r) for r in self.inits]
        return status

    def _publish(self, phase: str | None = None) -> bool:
        """Patch the pod's status if it changed; False if the pod no longer exists."""
        status = self.status(phase)
        if status == self._published:
            return True
        try:
            self.ctx.rest.request(
                "PATCH",
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status",
                {"metadata": {"uid": self.uid}, "status": status},
                content_type="application/strategic-merge-patch+json",
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            if exc.status == 409:  # a pod of the same name but another uid
                return False
            self.ctx.log.warning(
                "pod %s/%s: status update failed: %s", self.namespace, self.pod_name, exc
            )
            return True
        self._published = status
        return True
