"""A node that runs pods as local processes: the kubelet of one registered Node.

The process node registers a Node (Ready, with a nominal capacity: `CAPACITY`) and renews its
Lease so the node-lifecycle controller keeps it healthy. The control plane's kube-scheduler binds
pods to it; it watches all pods (informer.py) and runs those bound to it with a PodRunner each.
One node of a cluster also provisions claims (provisioner.py).

Nothing a pod starts outlives the node: each container runs under a subreaping shim that kills
its whole process tree when the container ends, every pod process carries the node's
environment marker, and `stop()` kills anything still carrying it.

`lose()` makes the node a dead machine (its pod processes killed, nothing reported);
`lose(freeze=True)` a machine cut off from the cluster whose processes live on: they are
stopped (SIGSTOP) while Kubernetes finds the node lost, and `thaw()` lets them run again,
still unreported, as a partitioned node's would, until `stop()` kills them.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.harness import proctree
from tests.harness.binaries import k8s_version
from tests.harness.containers import ContainerRuntime
from tests.harness.informer import Handler, run_informer
from tests.harness.kubeletserver import KubeletServer
from tests.harness.podrunner import NODE_MARKER, NodeContext, PodRunner
from tests.harness.podstatus import now_rfc3339
from tests.harness.provisioner import ClaimProvisioner
from tests.harness.rest import ApiError, Obj, Rest
from tests.harness.waiting import wait_for

#: Lease renewal and status every 5 s (a kubelet's default is 10 s): with the controller-manager's
#: `NODE_MONITOR_GRACE_SECONDS` (30 s) a lost node is noticed in half a minute, six missed
#: heartbeats, not the default 50 s.
HEARTBEAT_SECONDS = 5.0
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
# Pods' TMPDIRs live under a short directory: Ray puts Unix sockets under
# `$TMPDIR/ray/session_<date>_<pid>/sockets/`, and a socket path must fit in 107 bytes.
SHORT_TMP_LIMIT = 40
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: What a process node offers the scheduler. Nominal: its pods are processes of this machine and
#: share its cores and memory whatever they request, so the figures only need to fit the jobs the
#: tests and benchmarks run at once (a kuberay job's head and workers request whole CPUs); the
#: scheduler still refuses a pod that asks for more, or for what no node has.
CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "2000", "ephemeral-storage": "100Gi"}


def short_tmp_root() -> Path:
    """A fresh directory with a short path for the pods' TMPDIRs."""
    base = tempfile.gettempdir()
    if len(base) > SHORT_TMP_LIMIT:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="kpn-", dir=base))


def shared_host_paths(*node_dirs: Path) -> tuple[Path, ...]:
    """The host directories pods name as themselves (see `podenv`): the project checkout, the
    Python environment, the node's own directories and pytest's temporary directories, wherever
    they are (a checkout under /tmp included)."""
    pytest_tmp = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    paths = [PROJECT_ROOT, Path(sys.prefix), *node_dirs, pytest_tmp]
    return tuple(dict.fromkeys([*paths, *(p.resolve() for p in paths)]))


def project_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The base environment of pod processes: the project's Python first on PATH."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    env.setdefault("LANG", "C.UTF-8")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class ProcessNode:
    """Scheduler and kubelet of one Node whose pods run as local process groups."""

    def __init__(
        self,
        rest: Rest,
        server: str,
        ca_pem: bytes,
        root: Path,
        name: str = "process-node",
        extra_env: Mapping[str, str] | None = None,
        backoff: tuple[float, float] = (1.0, 10.0),
        kubelet_tls: tuple[Path, Path, Path] | None = None,
        containers: ContainerRuntime | None = None,
        provision_claims: bool = True,
    ) -> None:
        """`kubelet_tls` (serving cert, key, client CA) enables the log API (`kubectl logs`).
        `provision_claims`: this node provisions the cluster's claims (one node of a cluster)."""
        self.provision_claims = provision_claims
        self.rest = rest
        self.name = name
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.log = logging.getLogger(f"procnode.{name}.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self.log_file = root / "process-node.log"
        handler = logging.FileHandler(self.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(handler)
        self.node_id = uuid.uuid4().hex
        self.tmp_root = short_tmp_root()
        self.ctx = NodeContext(
            rest=rest,
            node_name=name,
            server=server,
            ca_pem=ca_pem,
            base_env=project_env(extra_env),
            backoff_initial=backoff[0],
            backoff_max=backoff[1],
            log=self.log,
            node_id=self.node_id,
            tmp_root=self.tmp_root,
            containers=containers,
            host_paths=shared_host_paths(root, self.tmp_root),
        )
        self._claims = ClaimProvisioner(rest, root / "pvc", name, self.log)
        self.runners: dict[str, PodRunner] = {}  # by pod uid, while the pod exists
        self._by_name: dict[tuple[str, str], PodRunner] = {}  # newest runner of each pod name
        self._lock = threading.Lock()
        self._stop = threading.Event()  # the kubelet's loops end: no heartbeat, no pod watch
        self._stopped = False  # stop() ran: the pod processes are gone
        self._frozen: list[int] = []
        self._threads: list[threading.Thread] = []
        self.kubelet_server: KubeletServer | None = None
        if kubelet_tls is not None:
            cert, key, client_ca = kubelet_tls
            self.kubelet_server = KubeletServer(self._log_lookup, (cert, key), client_ca)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ProcessNode:
        if self.kubelet_server is not None:
            self.kubelet_server.start()
        self._register()
        loops = [
            (self._heartbeat, "heartbeat"),
            (lambda: self._inform("/api/v1/pods", self._on_pod), "pods"),
        ]
        if self.provision_claims:
            claims = self._claims.on_claim
            loops.append((lambda: self._inform("/api/v1/persistentvolumeclaims", claims), "pvcs"))
        for target, tname in loops:
            thread = threading.Thread(target=target, name=f"{self.name}-{tname}", daemon=True)
            thread.start()
            self._threads.append(thread)
        wait_for(self._node_ready, 30, f"node {self.name} Ready")
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop watching and kill every pod process (the pods are not updated).

        Returns once no process carrying the node's marker is left. A second call (after
        `lose()`) does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self.ctx.cut_off.set()
        if self.kubelet_server is not None:
            self.kubelet_server.stop()
        with self._lock:
            runners = list(self.runners.values())
        for runner in runners:
            runner.stop()
        for runner in runners:
            runner.join(timeout=grace)
        for runner in runners:
            runner.kill_now()
        left = self.leftover_processes()
        if left:
            self.log.warning("killing leftover pod processes %s", left)
            proctree.kill_all(left)
            wait_for(lambda: not self.leftover_processes(), 10, "leftover pod processes to end")
        if self.ctx.containers is not None:
            self.ctx.containers.stop_all()
        shutil.rmtree(self.tmp_root, ignore_errors=True)
        for handler in list(self.log.handlers):
            self.log.removeHandler(handler)
            handler.close()

    def lose(self, freeze: bool = False) -> list[int]:
        """The node's machine dies: every process of its pods is killed and the node reports
        nothing more (no heartbeat, no pod status: its pods stay as the API last saw them),
        so the node lifecycle controller must find it lost and Kubernetes evict its pods.

        With `freeze`, the machine is cut off instead of dead: the node reports nothing more in
        the same way, but its pods' processes (each container's tree below its shim) are
        stopped with SIGSTOP, not killed, and keep their files, locks and sockets. `thaw()`
        lets them run on. Returns the frozen processes ([] without `freeze`)."""
        if not freeze:
            self.log.warning("node %s lost: killing its pods, reporting nothing more", self.name)
            self.stop(grace=0)
            return []
        self.log.warning("node %s cut off: freezing its pods, reporting nothing more", self.name)
        self.ctx.cut_off.set()  # pod runners publish no status from now on
        self._stop.set()  # heartbeat and informers end
        if self.kubelet_server is not None:  # its log API is out of reach too
            self.kubelet_server.stop()
            self.kubelet_server = None
        frozen: set[int] = set()
        while True:  # until no process appeared that is not stopped (one may fork meanwhile)
            with self._lock:
                runners = list(self.runners.values())
            new = {p for r in runners for p in r.processes()} - frozen
            if not new:
                break
            proctree.kill_all(sorted(new), signal.SIGSTOP)
            frozen |= new
        wait_for(
            lambda: all(proctree.stopped(p) or not proctree.alive(p) for p in frozen),
            10,
            f"the processes of node {self.name}'s pods stopped",
        )
        self._frozen = sorted(frozen)
        return self._frozen

    def thaw(self) -> list[int]:
        """After `lose(freeze=True)`: SIGCONT the frozen processes (still alive ones, which are
        returned). The node still reports nothing; `stop()` kills them."""
        alive = [p for p in self._frozen if proctree.alive(p)]
        self.log.warning("node %s: thawing %s", self.name, alive)
        proctree.kill_all(alive, signal.SIGCONT)
        return alive

    def pids(self) -> list[int]:
        """Process ids of the running containers' main processes and shims (each the leader of
        its own session)."""
        with self._lock:
            runners = list(self.runners.values())
        return [p for r in runners for p in r.session_leaders()]

    def leftover_processes(self) -> list[int]:
        """Living processes started by this node's pods (found by the environment marker)."""
        return proctree.with_env(NODE_MARKER, self.node_id)

    # -- for tests ---------------------------------------------------------------------------

    def runner(self, namespace: str, name: str) -> PodRunner:
        """The runner of the newest pod of that name."""
        with self._lock:
            found = self._by_name.get((namespace, name))
        if found is None:
            raise KeyError(f"pod {namespace}/{name} did not run on {self.name}")
        return found

    def kill_pod_process(
        self, namespace: str, name: str, sig: int = signal.SIGKILL, container: str | None = None
    ) -> int:
        """Send a signal to a container's process group (default: SIGKILL the first container)."""
        return self.runner(namespace, name).kill(sig, container)

    def pod_pid(self, namespace: str, name: str, container: str | None = None) -> int | None:
        try:
            return self.runner(namespace, name).pid(container)
        except KeyError:
            return None

    def logs(
        self, namespace: str, name: str, container: str | None = None, previous: bool = False
    ) -> str:
        """Output (stdout and stderr) of a container's current or previous run."""
        path = self.runner(namespace, name).log_path(container, previous)
        return path.read_text(errors="replace") if path.exists() else ""

    def _log_lookup(
        self, namespace: str, name: str, container: str, previous: bool
    ) -> tuple[Path, Callable[[], bool]]:
        runner = self.runner(namespace, name)
        path = runner.log_path(container, previous)
        return path, lambda: runner.pid(container) is not None

    def pod_dir(self, namespace: str, name: str) -> Path:
        return self.runner(namespace, name).dir

    def pod_processes(self, namespace: str, name: str, container: str | None = None) -> list[int]:
        """Living processes of a pod's containers (all of their trees, daemons included)."""
        try:
            return self.runner(namespace, name).processes(container)
        except KeyError:
            return []

    def pvc_dir(self, namespace: str, claim: str) -> Path:
        return self._claims.claim_dir(namespace, claim)

    # -- node registration and heartbeat ----------------------------------------------------

    @property
    def kubelet_port(self) -> int:
        return self.kubelet_server.port if self.kubelet_server is not None else 0

    def _node_status(self) -> Obj:
        now = now_rfc3339()
        resources = dict(CAPACITY)

        def cond(kind: str, value: str, reason: str, message: str) -> Obj:
            return {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._started_at,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "process node is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {
                "machineID": "process-node",
                "systemUUID": "process-node",
                "bootID": self._started_at,
                "kernelVersion": os.uname().release,
                "osImage": "local processes",
                "containerRuntimeVersion": "process://1",
                "kubeletVersion": k8s_version(),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def _register(self) -> None:
        self._started_at = now_rfc3339()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.datajuicer.io/process-node": "true",
                },
            },
        }
        with contextlib.suppress(ApiError):
            self.rest.post("/api/v1/nodes", node)
        self._post_status()
        self._renew_lease()

    def _post_status(self) -> None:
        self.rest.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": self._node_status()},
            content_type="application/strategic-merge-patch+json",
        )

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        now = datetime_micro()
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now}
        current = self.rest.get_or_none(path)
        if current is None:
            self.rest.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                    "spec": spec,
                },
            )
        else:
            self.rest.merge_patch(path, {"spec": spec})

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._renew_lease()
                self._post_status()
            except Exception as exc:
                if not self._stop.is_set():
                    self.log.warning("heartbeat failed: %s", exc)

    def _node_ready(self) -> bool:
        node = self.rest.get_or_none(f"/api/v1/nodes/{self.name}")
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # -- informers ---------------------------------------------------------------------------

    def _inform(self, path: str, handle: Handler) -> None:
        run_informer(self.rest, path, handle, self._stop, self.log)

    # -- pods --------------------------------------------------------------------------------

    def _on_pod(self, kind: str, obj: Obj) -> None:
        if kind == "SYNC":
            pods = obj["items"]
            alive = {p["metadata"]["uid"] for p in pods}
            with self._lock:
                gone = [r for uid, r in self.runners.items() if uid not in alive]
            for runner in gone:
                self._forget(runner)
            for pod in pods:
                self._pod_changed(pod)
        elif kind == "DELETED":
            with self._lock:
                runner = self.runners.get(obj["metadata"]["uid"])
            if runner is not None:
                self._forget(runner)
        else:
            self._pod_changed(obj)

    def _forget(self, runner: PodRunner) -> None:
        runner.removed()
        with self._lock:
            self.runners.pop(runner.uid, None)

    def _pod_changed(self, pod: Obj) -> None:
        try:
            spec, meta = pod["spec"], pod["metadata"]
            if spec.get("nodeName") != self.name:  # not bound yet (kube-scheduler's), or elsewhere
                return
            uid = meta["uid"]
            with self._lock:
                runner = self.runners.get(uid)
            deleting = meta.get("deletionTimestamp") is not None
            if runner is None:
                phase = (pod.get("status") or {}).get("phase")
                if deleting or phase in ("Succeeded", "Failed"):
                    if deleting:
                        self._finalise(pod)
                    return
                runner = self._new_runner(pod)
            if deleting:
                if runner.done.is_set():
                    self._finalise(pod)
                else:
                    runner.request_delete(float(meta.get("deletionGracePeriodSeconds") or 0))
        except Exception:
            self.log.exception("pod event failed")

    def _new_runner(self, pod: Obj) -> PodRunner:
        meta = pod["metadata"]
        pod_dir = self.root / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        runner = PodRunner(self.ctx, pod, pod_dir)
        with self._lock:
            self.runners[meta["uid"]] = runner
            self._by_name[(meta["namespace"], meta["name"])] = runner
        runner.start()
        return runner

    def _finalise(self, pod: Obj) -> None:
        """Remove a pod that has no process left (kubelet's final delete, grace 0)."""
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.rest.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )


def datetime_micro() -> str:
    """Now as a MicroTime (what a Lease's renewTime needs)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
