"""The whole test cluster: control plane, process node, KubeRay CRDs and the KubeRay operator,
with client helpers."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

import kubernetes

from tests.harness import binaries
from tests.harness.containers import ContainerRuntime
from tests.harness.controlplane import ControlPlane
from tests.harness.crds import install_kuberay_crds
from tests.harness.kuberayoperator import KubeRayOperator
from tests.harness.processes import tail
from tests.harness.procnode import ProcessNode
from tests.harness.waiting import wait_for


class Cluster:
    """Start with `start()`, stop with `stop()`; everything lives under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        node_name: str = "process-node",
        extra_env: Mapping[str, str] | None = None,
        kuberay: bool = True,
        container_mode: bool = False,
        nodes: int = 1,
    ) -> None:
        """`kuberay=False` installs the KubeRay CRDs but does not run the operator.
        `container_mode`: pods run from their images with podman (tests/harness/containers.py).
        `nodes`: how many process nodes (`node_name`, then `<node_name>-2`, ...); the first
        provisions the claims, kube-scheduler spreads the pods."""
        if nodes < 1:
            raise ValueError(f"nodes: got {nodes}; expected at least 1")
        self.workdir = workdir
        self.bin_dir = binaries.ensure_built()
        self.kuberay_dir = binaries.ensure_kuberay_built()
        self.control_plane = ControlPlane(workdir / "control-plane", self.bin_dir)
        self.node_name = node_name
        self.node_names = [node_name] + [f"{node_name}-{i}" for i in range(2, nodes + 1)]
        self.extra_env = extra_env
        self.nodes: list[ProcessNode] = []
        self.kuberay_operator: KubeRayOperator | None = (
            KubeRayOperator(self.control_plane, self.bin_dir, self.kuberay_dir) if kuberay else None
        )
        self.containers = ContainerRuntime() if container_mode else None

    @property
    def node(self) -> ProcessNode:
        """The first node (the only one unless the cluster was made with more)."""
        assert self.nodes, "cluster not started"
        return self.nodes[0]

    def node_named(self, name: str) -> ProcessNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no process node {name!r} (nodes: {', '.join(self.node_names)})")

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    def start(self) -> Cluster:
        self.control_plane.start()
        try:
            cp = self.control_plane
            for i, name in enumerate(self.node_names):
                cert, key = cp.issue_node_serving_cert(name)
                node = ProcessNode(
                    cp.rest,
                    cp.server,
                    cp.ca_pem,
                    self.workdir / ("node" if i == 0 else f"node-{i + 1}"),
                    name,
                    extra_env=self.extra_env,
                    kubelet_tls=(cert, key, cp.ca_file),
                    containers=self.containers,
                    provision_claims=i == 0,
                )
                self.nodes.append(node)
                node.start()
            install_kuberay_crds(self.bin_dir, self.kuberay_dir, self.kubeconfig, cp.rest)
            if self.kuberay_operator is not None:
                self.kuberay_operator.start()
        except BaseException as exc:
            logs = self.logs()
            self.stop()
            raise RuntimeError(f"cluster failed to start: {exc}\n{logs}") from exc
        return self

    def stop(self) -> None:
        """Stop the operator (so it recreates nothing), the node's pods, the control plane."""
        if self.kuberay_operator is not None:
            self.kuberay_operator.stop()
        for node in self.nodes:
            node.stop()
        self.control_plane.stop()

    def pids(self) -> list[int]:
        """Every process the cluster started that is still running."""
        node = [pid for n in self.nodes for pid in n.pids()]
        operator = self.kuberay_operator
        extra = [operator.pid] if operator is not None and operator.pid is not None else []
        return self.control_plane.pids() + extra + node

    def logs(self, lines: int = 40) -> str:
        """Tails of the component logs, the KubeRay operator's and the process node's."""
        operator = self.kuberay_operator
        nodes = "".join(
            f"\n----- {node.name} ({node.log_file}) -----\n" + tail(node.log_file, lines)
            for node in self.nodes
        )
        return (
            self.control_plane.logs(lines)
            + ("\n" + operator.logs(lines) if operator is not None else "")
            + nodes
        )

    # -- clients -----------------------------------------------------------------------------

    def api_client(self) -> kubernetes.client.ApiClient:
        """A client of the official `kubernetes` package, as the admin."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "helm"), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    # -- namespaces --------------------------------------------------------------------------

    def create_namespace(self, prefix: str = "test") -> str:
        """A fresh namespace whose `default` ServiceAccount exists (pods can be created)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        rest = self.control_plane.rest
        rest.post(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        wait_for(
            lambda: rest.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            30,
            f"ServiceAccount default in {name}",
        )
        return name

    def delete_namespace(self, name: str) -> None:
        self.control_plane.rest.delete(f"/api/v1/namespaces/{name}")
