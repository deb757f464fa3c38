"""One pod on the process node: its containers run as local process trees, its status is real.

A PodRunner is a thread. It prepares the pod directory (volumes, the service-account kubeconfig,
a private HOME and TMPDIR), runs init containers in order, then the containers, restarts them as
`restartPolicy` says (with a capped exponential back-off), and reports every change to the pod's
status as a kubelet would. `build_launch` is the one place that decides what a container is
started with; `ContainerProcess` runs it under a subreaping shim. On deletion the runner sends
SIGTERM to each container's main process (as a container runtime does), waits for the grace
period, kills what is left of every container, reports the terminal status and removes the pod.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import proctree
from tests.harness.containerprocess import (
    ContainerLaunch,
    ContainerProcess,
    RunningContainer,
    StartError,
)
from tests.harness.containers import ContainerRuntime
from tests.harness.kubeconfig import write_kubeconfig
from tests.harness.podenv import ConfigError, PathMapper, command_line, resolve_env
from tests.harness.podstatus import ContainerRun, PodStatusRenderer, now_rfc3339, waiting
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
KILL_WAIT_SECONDS = 10.0
# Environment markers of every pod process (inherited by whatever it starts): the node finds and
# kills leftovers by them.
NODE_MARKER = "KPN_NODE_ID"
POD_MARKER = "KPN_POD_UID"


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
    node_id: str
    tmp_root: Path  # short: Ray's Unix socket paths under a pod's TMPDIR must stay < 108 bytes
    # Starts one container from its launch; raises StartError (or OSError) if it cannot run.
    start_container: Callable[[ContainerLaunch], RunningContainer] = ContainerProcess
    containers: ContainerRuntime | None = None  # container mode: podman runs each container
    # Host directories a pod's strings name as themselves, never mapped into a mount (podenv).
    host_paths: tuple[Path, ...] = ()
    # Set when the node is cut off from the API server (lost, or stopping): nothing is reported.
    cut_off: threading.Event = field(default_factory=threading.Event)


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
        self._status = PodStatusRenderer()
        self._next_prepare = 0.0
        self.home = pod_dir / "home"
        self.tmp = ctx.tmp_root / self.uid[:13]
        self._lock = threading.Lock()  # guards starting processes against kill_now()
        self._killed = False

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
        """Send `sig` to a running container's process group; return its main pid."""
        run = self._find(container)
        proc = run.proc
        try:
            if proc is None:
                raise ProcessLookupError
            proc.signal_group(sig)
        except ProcessLookupError:
            raise RuntimeError(
                f"container {run.name} of {self.namespace}/{self.pod_name} is not running"
            ) from None
        return proc.pid

    def pid(self, container: str | None = None) -> int | None:
        """The main process of a running container."""
        proc = self._find(container).proc
        return proc.pid if proc is not None and proc.running() else None

    def exit_code(self, container: str | None = None) -> int | None:
        """The exit code of a container's last run (None while it runs or before it ran)."""
        return self._find(container).exit_code

    def session_leaders(self) -> list[int]:
        """Process ids that lead the sessions of this pod's running containers."""
        return [p for r in self.inits + self.mains if r.proc for p in r.proc.session_leaders()]

    def processes(self, container: str | None = None) -> list[int]:
        """Living processes of one container (default: all containers) of this pod."""
        runs = self.inits + self.mains if container is None else [self._find(container)]
        return [p for r in runs if r.proc is not None for p in r.proc.processes()]

    def kill_now(self) -> None:
        """Kill every container and start none again (any thread); waits until they ended."""
        with self._lock:
            self._killed = True
            procs = [r.proc for r in self.inits + self.mains if r.proc is not None]
        for proc in procs:
            proc.kill()
        for proc in procs:
            if not proc.ended_within(KILL_WAIT_SECONDS):
                self.ctx.log.warning(
                    "pod %s/%s: container %d still running", self.namespace, self.pod_name, proc.pid
                )
        self.sweep()

    def sweep(self) -> list[int]:
        """SIGKILL any process still marked as this pod's (one whose shim was killed); the pids."""
        left = proctree.with_env(POD_MARKER, self.uid)
        if left:
            self.ctx.log.warning(
                "pod %s/%s: killing leftover processes %s", self.namespace, self.pod_name, left
            )
            proctree.kill_all(left)
        return left

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
            for run in self.inits + self.mains:
                if run.proc is not None:
                    run.proc.ended_within(KILL_WAIT_SECONDS)
            self.sweep()
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
                    run.state = waiting("ContainerCreating", self.prepare_message)
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
        self.home.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            (self.dir / "tmp").symlink_to(self.tmp, target_is_directory=True)
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

    def build_launch(self, run: ContainerRun, attempt: int) -> ContainerLaunch:
        """What a container is started with: argv, environment, working directory, log file
        (that of restart number `attempt`).

        The environment: the node's base environment, the pod's own HOME and TMPDIR (so no pod
        reads or writes the host's ~/.ray or /tmp/ray), the node's variables, then the pod's
        envFrom and env. Mount paths and Service names are rewritten in argv and env values.
        Raises ConfigError or ApiError while a referenced ConfigMap or Secret is missing.
        """
        spec = run.spec
        mapper = PathMapper(container_mounts(spec, self.volumes), self.ctx.host_paths)
        base = dict(self.ctx.base_env)
        base.update(
            {
                "HOME": str(self.home),
                "TMPDIR": str(self.tmp),
                "HOSTNAME": self.pod_name,
                "KPN_POD_DIR": str(self.dir),
                "KPN_MOUNTS": mapper.as_json(),
                NODE_MARKER: self.ctx.node_id,
                POD_MARKER: self.uid,
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": self.ctx.server.rsplit(":", 1)[1],
            }
        )
        if self.kubeconfig is not None:
            base["KUBECONFIG"] = str(self.kubeconfig)
        env = resolve_env(self.pod, spec, base, self._lookup, mapper)
        # The markers are the node's, not the pod's to change.
        env[NODE_MARKER], env[POD_MARKER] = self.ctx.node_id, self.uid
        workdir = spec.get("workingDir")
        cwd = self.dir / "rootfs"
        if workdir:
            cwd = mapper.local(workdir) or self.dir / "rootfs" / workdir.lstrip("/")
        argv = tuple(command_line(spec, env, mapper))
        if self.ctx.containers is not None:  # container mode: `podman run` of the pod's image
            podman_argv, env = self.ctx.containers.command(
                self.pod, spec, self._lookup, self.volumes, self.ctx.server, self.kubeconfig
            )
            env[NODE_MARKER], env[POD_MARKER] = self.ctx.node_id, self.uid
            argv = tuple(podman_argv)
        return ContainerLaunch(
            argv=argv,
            env=env,
            cwd=cwd,
            log_path=self.dir / "logs" / run.name / f"{attempt}.log",
        )

    def _start(self, run: ContainerRun) -> None:
        """Start one container; a start that fails is reported as a kubelet StartError."""
        restarting = run.state.get("terminated") or run.last_state or run.exit_code is not None
        attempt = run.restart_count + 1 if restarting else run.restart_count
        try:
            launch = self.build_launch(run, attempt)
        except (ConfigError, ApiError) as exc:
            run.state = waiting("CreateContainerConfigError", str(exc))
            run.next_start = time.monotonic() + CONFIG_RETRY_SECONDS
            return
        run.restart_count = attempt
        run.generation += 1
        run.exit_code = None
        launch.cwd.mkdir(parents=True, exist_ok=True)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = now_rfc3339()
        run.started_mono = time.monotonic()
        if not launch.argv:
            self._start_failed(run, started, "no command: the process node runs only `command`")
            return
        failure: StartError | OSError | None = None
        with self._lock:  # kill_now() must see every container that starts
            if self._killed:
                return
            try:
                run.proc = self.ctx.start_container(launch)
            except (StartError, OSError) as exc:
                failure = exc
        if failure is not None:
            reason = (
                str(failure)
                if isinstance(failure, StartError)
                else failure.strerror or str(failure)
            )
            if "No such file" in reason:
                reason = "executable file not found in $PATH"
            self._start_failed(
                run,
                started,
                "failed to create containerd task: failed to create shim task: OCI runtime "
                "create failed: runc create failed: unable to start container process: "
                f'exec: "{launch.argv[0]}": {reason}: unknown',
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
            list(launch.argv),
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

    def _wait_process(self, run: ContainerRun, proc: RunningContainer, gen: int) -> None:
        code = proc.wait()  # the shim has killed what was left of the container
        if self.ctx.containers is not None:
            self.ctx.containers.cleanup(self.pod, run.spec)
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
        with self._lock:
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
            run.state = waiting(
                "CrashLoopBackOff",
                f"back-off {delay:g}s restarting failed container={run.name} "
                f"pod={self.pod_name}_{self.namespace}({self.uid})",
            )

    # -- deletion ----------------------------------------------------------------------------

    def _running(self) -> list[ContainerRun]:
        return [r for r in self.inits + self.mains if r.proc is not None]

    def _terminate(self, grace: float) -> None:
        """SIGTERM to each main process, the grace period, then kill each container's processes;
        then the terminal status; then remove the pod."""
        self.ctx.log.info("pod %s/%s: deleting, grace %gs", self.namespace, self.pod_name, grace)
        for run in self.inits + self.mains:
            run.next_start = None
        for run in self._running():
            assert run.proc is not None
            run.proc.terminate()
        deadline = time.monotonic() + grace
        if not self._drain_until(deadline):
            return
        if self._running():
            self._kill_containers()
            if not self._drain_until(time.monotonic() + KILL_WAIT_SECONDS):
                return
        ran = [r for r in self.mains if r.exit_code is not None]
        succeeded = bool(ran) and all(r.exit_code == 0 for r in ran)
        self.stage = "done"
        self._publish(phase="Succeeded" if succeeded else "Failed")
        if self.ctx.cut_off.is_set():
            return
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

    def _kill_containers(self) -> None:
        for run in self._running():
            assert run.proc is not None
            run.proc.kill()

    def _kill_all(self) -> None:
        for run in self.inits + self.mains:
            run.next_start = None
        self._kill_containers()

    # -- status ------------------------------------------------------------------------------

    def status(self, phase: str | None = None) -> Obj:
        return self._status.render(self.stage, self.inits, self.mains, self.start_time, phase)

    def _publish(self, phase: str | None = None) -> bool:
        """Patch the pod's status if it changed; False if the pod no longer exists. A node
        cut off from the API server reports nothing (and its pods run on as they were)."""
        if self.ctx.cut_off.is_set():
            return True
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
