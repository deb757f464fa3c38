"""The KubeRay CRDs (RayCluster, RayJob), installed server-side from the pinned ray-operator."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness.binaries import KUBERAY_CRDS

CRD_NAMES = ("rayclusters.ray.io", "rayjobs.ray.io")


def kuberay_version(bin_dir: Path) -> str:
    return (bin_dir / "KUBERAY_VERSION").read_text().strip()


def install_kuberay_crds(bin_dir: Path, kubeconfig: Path, timeout: int = 60) -> None:
    """`kubectl apply --server-side` the CRDs, then wait until they are Established."""
    kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}"]
    files: list[str] = []
    for crd in KUBERAY_CRDS:
        files += ["-f", str(bin_dir / crd)]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", *files],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    subprocess.run(
        [
            *kubectl,
            "wait",
            "--for=condition=Established",
            f"--timeout={timeout}s",
            *(f"crd/{name}" for name in CRD_NAMES),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
