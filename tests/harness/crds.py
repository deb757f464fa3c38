"""The KubeRay CRDs (RayCluster, RayJob, RayService), installed server-side from the pinned
ray-operator module."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness.binaries import KUBERAY_CRDS
from tests.harness.rest import Rest
from tests.harness.waiting import wait_for

CRD_NAMES = ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io")


def kuberay_version(bin_dir: Path) -> str:
    return (bin_dir / "KUBERAY_VERSION").read_text().strip()


def _established(rest: Rest, name: str) -> bool:
    crd = rest.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def install_kuberay_crds(
    bin_dir: Path, crd_dir: Path, kubeconfig: Path, rest: Rest, timeout: int = 120
) -> None:
    """`kubectl apply --server-side` the CRDs in `crd_dir` with the kubectl in `bin_dir`, then
    wait until they are Established and served."""
    files: list[str] = []
    for crd in KUBERAY_CRDS:
        files += ["-f", str(crd_dir / crd)]
    argv = [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", "apply", "--server-side"]
    result = subprocess.run(
        [*argv, "--force-conflicts", *files],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl apply of the KubeRay CRDs failed:\n{result.stderr}")
    for name in CRD_NAMES:
        wait_for(lambda n=name: _established(rest, n), timeout, f"CRD {name} Established")
    wait_for(
        lambda: (
            {r["name"] for r in rest.get("/apis/ray.io/v1")["resources"]}
            >= {"rayclusters", "rayjobs", "rayservices"}
        ),
        timeout,
        "ray.io/v1 served",
        ignore=(Exception,),
    )
