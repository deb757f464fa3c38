"""The real KubeRay operator (ray-operator, built from its Go module) run against the cluster.

It runs like the controller-manager: a child process with a parent-death signal, its output in
`<control plane>/logs/kuberay-operator.log`, readiness waited for by condition (the RayCluster
controller's "Starting workers" log line). It runs out of cluster under its own identity, user
`kuberay-operator` (a client certificate from the cluster CA), bound to KubeRay's own ClusterRole,
so RBAC applies to it as in a real deployment. Settings that a shared host needs:

- `--enable-leader-election=false` (out of cluster, leader election needs a namespace);
- `--metrics-addr=0 --health-probe-bind-address=0`: no fixed ports (the defaults :8080 and :8082
  would collide with anything else on the host);
- `ENABLE_PROBES_INJECTION=false`: the process node runs no probes, and KubeRay's probes need the
  Ray dashboard, which `ray[client]` does not have. So a Ray pod is Ready once its process runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.harness.binaries import KUBERAY_OPERATOR, KUBERAY_ROLE
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeconfig import write_kubeconfig
from tests.harness.processes import Component
from tests.harness.waiting import wait_for

OPERATOR_USER = "kuberay-operator"
CLUSTER_ROLE = "kuberay-operator"
OPERATOR_ENV = {"ENABLE_PROBES_INJECTION": "false"}
READY_TIMEOUT = 120.0


class KubeRayOperator:
    """ray-operator for one control plane; `start()` returns once it reconciles RayClusters."""

    def __init__(self, control_plane: ControlPlane, bin_dir: Path, kuberay_dir: Path) -> None:
        self.control_plane = control_plane
        self.bin_dir = bin_dir
        self.kuberay_dir = kuberay_dir
        self.kubeconfig = control_plane.workdir / "kuberay-operator.kubeconfig"
        self.component = Component(
            "kuberay-operator",
            [
                str(kuberay_dir / KUBERAY_OPERATOR),
                f"--kubeconfig={self.kubeconfig}",
                "--enable-leader-election=false",
                "--metrics-addr=0",
                "--health-probe-bind-address=0",
                "--log-stdout-encoder=console",
            ],
            control_plane.logs_dir / "kuberay-operator.log",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **OPERATOR_ENV},
        )

    @property
    def pid(self) -> int | None:
        return self.component.pid

    def start(self, timeout: float = READY_TIMEOUT) -> KubeRayOperator:
        self._grant_rbac()
        self.component.start()
        wait_for(self._ready, timeout, "the KubeRay operator's RayCluster controller to start")
        return self

    def stop(self) -> None:
        self.component.stop(grace=5.0)

    def logs(self, lines: int = 40) -> str:
        return f"----- kuberay-operator ({self.component.log}) -----\n{self.component.tail(lines)}"

    def _ready(self) -> bool:
        self.component.check_alive()
        try:
            text = self.component.log.read_text(errors="replace")
        except OSError:
            return False
        # e.g. `... info  controllers.RayCluster  Starting workers  {"worker count": 1}`
        return any(
            "Starting workers" in line and "controllers.RayCluster\t" in line
            for line in text.splitlines()
        )

    def _grant_rbac(self) -> None:
        """A client certificate for the operator's user, and its ClusterRole bound to it."""
        cp = self.control_plane
        assert cp.ca is not None, "control plane not started"
        pair = cp.ca.issue("kuberay-operator", OPERATOR_USER)
        write_kubeconfig(
            self.kubeconfig, cp.server, cp.ca_pem, OPERATOR_USER, cert=(pair.cert, pair.key)
        )
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kuberay-operator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": CLUSTER_ROLE,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
            ],
        }
        kubectl = [str(self.bin_dir / "kubectl"), f"--kubeconfig={cp.kubeconfig}", "apply"]
        for args, stdin in (
            (["-f", str(self.kuberay_dir / KUBERAY_ROLE)], None),
            (["-f", "-"], json.dumps(binding)),
        ):
            result = subprocess.run(
                [*kubectl, *args], input=stdin, capture_output=True, text=True, timeout=60
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"granting the KubeRay operator its role failed:\n{result.stderr}"
                )
