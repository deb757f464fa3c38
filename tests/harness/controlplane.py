"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler.

Everything runs as local processes on free ports, with certificates generated for the run:
RBAC authorization, TLS serving, and a service-account signing key so that the TokenRequest API
works. The real kube-scheduler binds pods to the process nodes, so node selectors, affinity,
taints, resource fit and unschedulable pods behave as in a real cluster. `start()` returns once
the apiserver is ready, the scheduler is healthy and the controllers have created the
`default` ServiceAccount; `stop()` ends every process. A port is free when it is picked but may be
taken before the component binds it: a component that exits with "address already in use" is
started again on new ports (up to PORT_ATTEMPTS times).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import urllib3

from tests.harness import binaries
from tests.harness.certs import CertificateAuthority, CertPair, service_account_keys
from tests.harness.kubeconfig import write_kubeconfig
from tests.harness.ports import free_port
from tests.harness.processes import Component
from tests.harness.rest import Rest
from tests.harness.waiting import wait_for

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"

# Controllers of kube-controller-manager: all of the default set. Among them: garbagecollector,
# job, namespace, serviceaccount, serviceaccount-token, root-ca-certificate-publisher,
# persistentvolume-binder, replicaset, deployment, node-lifecycle.
CONTROLLERS = "*"
#: How long a node may go without a heartbeat before it is NotReady (Unknown) and tainted
#: unreachable (kube-controller-manager's default is 50 s; process nodes renew every 5 s).
NODE_MONITOR_GRACE_SECONDS = 30
PORT_ATTEMPTS = 3
ADDRESS_IN_USE = "address already in use"


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler rooted in `workdir`."""

    def __init__(self, workdir: Path, bin_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir or binaries.ensure_built()
        self.pki = workdir / "pki"
        self.logs_dir = workdir / "logs"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.etcd_port = free_port()
        self.apiserver_port = free_port()
        self.kcm_port = free_port()
        self.scheduler_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self.components: list[Component] = []
        self.ca: CertificateAuthority | None = None
        self.admin: CertPair | None = None
        self._kcm_cert: CertPair | None = None
        self._scheduler_cert: CertPair | None = None
        self._rest: Rest | None = None

    # -- paths and clients -------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()

    @property
    def rest(self) -> Rest:
        """An admin REST client."""
        if self._rest is None:
            assert self.admin is not None, "control plane not started"
            self._rest = Rest(self.server, self.ca_file, cert=(self.admin.cert, self.admin.key))
        return self._rest

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def issue_node_serving_cert(self, node: str) -> tuple[Path, Path]:
        """A serving certificate for a node's kubelet API on 127.0.0.1, from the cluster CA."""
        assert self.ca is not None, "control plane not started"
        pair = self.ca.issue(
            f"kubelet-{node}",
            f"system:node:{node}",
            orgs=("system:nodes",),
            dns_names=(node, "localhost"),
            ips=("127.0.0.1",),
            server=True,
        )
        return pair.cert, pair.key

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> ControlPlane:
        started = time.monotonic()
        try:
            self._write_pki()
            self._retry_on_port_clash(self._start_etcd, self._new_etcd_port, timeout)
            self._retry_on_port_clash(self._start_apiserver, self._new_apiserver_port, timeout)
            self._retry_on_port_clash(self._start_controller_manager, self._new_kcm_port, timeout)
            self._retry_on_port_clash(self._start_scheduler, self._new_scheduler_port, timeout)
            remaining = max(10.0, timeout - (time.monotonic() - started))
            wait_for(
                lambda: (
                    self._check_all()
                    and self.rest.get_or_none("/api/v1/namespaces/default/serviceaccounts/default")
                ),
                timeout=remaining,
                what="the default ServiceAccount (controllers running)",
                interval=0.2,
            )
        except BaseException as exc:
            logs = self.logs()
            self.stop()
            raise RuntimeError(f"control plane failed to start: {exc}\n{logs}") from exc
        return self

    def stop(self, grace: float = 3.0) -> None:
        """Stop the components, newest first. The apiserver waits for open watches (the process
        node's among them) when it shuts down gracefully, so it gets `grace` seconds, then SIGKILL.
        """
        for component in reversed(self.components):
            component.stop(grace)

    def pids(self) -> list[int]:
        return [c.pid for c in self.components if c.pid is not None]

    def logs(self, lines: int = 40) -> str:
        """The tail of every component's log, for failure reports."""
        parts = []
        for component in self.components:
            parts.append(f"----- {component.name} ({component.log}) -----\n{component.tail(lines)}")
        return "\n".join(parts)

    def _retry_on_port_clash(
        self, step: Callable[[float], None], new_port: Callable[[], None], timeout: float
    ) -> None:
        """Run a start step; if its component died because its port was taken, try new ports."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            count = len(self.components)
            try:
                step(timeout)
                return
            except RuntimeError as exc:
                if ADDRESS_IN_USE not in str(exc) or attempt == PORT_ATTEMPTS:
                    raise
                for component in self.components[count:]:
                    component.stop(1.0)
                del self.components[count:]
                new_port()

    def _new_etcd_port(self) -> None:
        self.etcd_port = free_port()

    def _new_apiserver_port(self) -> None:
        self.apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self._rest = None
        self._write_kubeconfigs()

    def _new_kcm_port(self) -> None:
        self.kcm_port = free_port()

    def _new_scheduler_port(self) -> None:
        self.scheduler_port = free_port()

    def _check_all(self) -> bool:
        for component in self.components:
            component.check_alive()
        return True

    # -- steps -------------------------------------------------------------------------------

    def _write_pki(self) -> None:
        self.ca = CertificateAuthority(self.pki)
        self.ca.issue(
            "apiserver",
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", KUBERNETES_SERVICE_IP),
            server=True,
        )
        self.admin = self.ca.issue("admin", "admin", orgs=("system:masters",))
        self._kcm_cert = self.ca.issue("controller-manager", "system:kube-controller-manager")
        self._scheduler_cert = self.ca.issue("scheduler", "system:kube-scheduler")
        self.ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", orgs=("system:masters",)
        )
        service_account_keys(self.pki)
        self._write_kubeconfigs()

    def _write_kubeconfigs(self) -> None:
        assert self.ca is not None and self.admin is not None and self._kcm_cert is not None
        assert self._scheduler_cert is not None
        kcm, scheduler = self._kcm_cert, self._scheduler_cert
        write_kubeconfig(
            self.kubeconfig,
            self.server,
            self.ca.cert_pem,
            "admin",
            cert=(self.admin.cert, self.admin.key),
        )
        write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig",
            self.server,
            self.ca.cert_pem,
            "system:kube-controller-manager",
            cert=(kcm.cert, kcm.key),
        )
        write_kubeconfig(
            self.workdir / "scheduler.kubeconfig",
            self.server,
            self.ca.cert_pem,
            "system:kube-scheduler",
            cert=(scheduler.cert, scheduler.key),
        )

    def _add(self, name: str, argv: list[str]) -> Component:
        component = Component(name, argv, self.logs_dir / f"{name}.log")
        self.components.append(component)
        component.start()
        return component

    def _start_etcd(self, timeout: float) -> None:
        peer = free_port()
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer}"
        etcd = self._add(
            "etcd",
            [
                self._bin("etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        http = urllib3.PoolManager(retries=False)

        def healthy() -> bool:
            etcd.check_alive()
            resp = http.request("GET", f"{client_url}/health", timeout=2)
            return resp.status == 200 and b'"health":"true"' in resp.data

        wait_for(
            healthy, timeout, "etcd /health", interval=0.1, ignore=(urllib3.exceptions.HTTPError,)
        )

    def _start_apiserver(self, timeout: float) -> None:
        pki = self.pki
        apiserver = self._add(
            "kube-apiserver",
            [
                self._bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=true",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )

        def ready() -> bool:
            apiserver.check_alive()
            status, body = self.rest.raw_get("/readyz")
            return status == 200 and body.strip() == "ok"

        wait_for(
            ready,
            timeout,
            "kube-apiserver /readyz",
            interval=0.2,
            ignore=(urllib3.exceptions.HTTPError,),
        )

    def _start_scheduler(self, timeout: float) -> None:
        kubeconfig = self.workdir / "scheduler.kubeconfig"
        scheduler = self._add(
            "kube-scheduler",
            [
                self._bin("kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                f"--cert-dir={self.workdir / 'scheduler-serving'}",
                "--leader-elect=false",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_healthy(scheduler, self.scheduler_port, "kube-scheduler", timeout)

    def _wait_healthy(self, component: Component, port: int, name: str, timeout: float) -> None:
        """Wait for a component's /healthz on 127.0.0.1:`port` (its self-signed serving cert)."""
        http = urllib3.PoolManager(cert_reqs="CERT_NONE", retries=False)

        def healthy() -> bool:
            component.check_alive()
            resp = http.request("GET", f"https://127.0.0.1:{port}/healthz", timeout=2)
            return resp.status == 200

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        wait_for(
            healthy,
            timeout,
            f"{name} /healthz",
            interval=0.2,
            ignore=(urllib3.exceptions.HTTPError,),
        )

    def _start_controller_manager(self, timeout: float) -> None:
        pki = self.pki
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        kcm = self._add(
            "kube-controller-manager",
            [
                self._bin("kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-serving'}",
                "--leader-elect=false",
                f"--controllers={CONTROLLERS}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--pvclaimbinder-sync-period=2s",
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
                "--node-monitor-period=2s",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_healthy(kcm, self.kcm_port, "kube-controller-manager", timeout)
