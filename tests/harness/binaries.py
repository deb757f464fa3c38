"""Where the Kubernetes tool binaries and the KubeRay operator are.

hack/build-k8s-tools.sh (control plane, kubectl, helm) and hack/build-kuberay.sh (ray-operator
and its CRDs and ClusterRole) are the one source of truth: the harness asks them for their
directories.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-k8s-tools.sh"
KUBERAY_BUILD_SCRIPT = REPO_ROOT / "hack" / "build-kuberay.sh"
TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "helm",
)
KUBERAY_CRDS = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "ray.io_rayservices.yaml")
KUBERAY_OPERATOR = "ray-operator"
KUBERAY_ROLE = "kuberay-operator-role.yaml"


@functools.cache
def k8s_version() -> str:
    """The pinned Kubernetes release, read from the tools module (e.g. "v1.36.3")."""
    for line in (REPO_ROOT / "hack" / "gotools" / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:2] == ["require", "k8s.io/kubernetes"]:
            return words[2]
    raise RuntimeError("hack/gotools/go.mod does not pin k8s.io/kubernetes")


def _print_dir(script: Path) -> Path:
    out = subprocess.run(
        ["bash", str(script), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def _ensure(script: Path, directory: Path) -> Path:
    if not (directory.parent / ".complete").exists():
        subprocess.run(["bash", str(script)], check=True)
    return directory


@functools.cache
def bin_dir() -> Path:
    """The cache directory of the pinned build, as the build script computes it."""
    return _print_dir(BUILD_SCRIPT)


@functools.cache
def kuberay_dir() -> Path:
    """The cache directory of the pinned KubeRay operator build."""
    return _print_dir(KUBERAY_BUILD_SCRIPT)


def ensure_built() -> Path:
    """Build the tools if they are missing (a no-op when they are built) and return their dir."""
    return _ensure(BUILD_SCRIPT, bin_dir())


def ensure_kuberay_built() -> Path:
    """Build the KubeRay operator if it is missing and return its directory."""
    return _ensure(KUBERAY_BUILD_SCRIPT, kuberay_dir())


def tool(name: str) -> str:
    """The absolute path of one binary, e.g. tool("kubectl")."""
    return str(ensure_built() / name)
