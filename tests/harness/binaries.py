"""Where the Kubernetes tool binaries are: hack/build-k8s-tools.sh is the one source of truth."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-k8s-tools.sh"
TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
KUBERAY_CRDS = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml")


@functools.cache
def k8s_version() -> str:
    """The pinned Kubernetes release, read from the tools module (e.g. "v1.36.3")."""
    for line in (REPO_ROOT / "hack" / "gotools" / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:2] == ["require", "k8s.io/kubernetes"]:
            return words[2]
    raise RuntimeError("hack/gotools/go.mod does not pin k8s.io/kubernetes")


@functools.cache
def bin_dir() -> Path:
    """The cache directory of the pinned build, as the build script computes it."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def ensure_built() -> Path:
    """Build the tools if they are missing (a no-op when they are built) and return their dir."""
    directory = bin_dir()
    if not (directory.parent / ".complete").exists():
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    return directory


def tool(name: str) -> str:
    """The absolute path of one binary, e.g. tool("kubectl")."""
    return str(ensure_built() / name)
