"""Test harness: a real Kubernetes control plane and a node that runs pods as local processes.

`Cluster` (control plane + process node + KubeRay CRDs) backs the pytest fixtures and
`make dev-cluster`; see docs/dev-cluster.md. The heavy parts load on first use, so importing the
package (for `wait_for`, say) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

from tests.harness.waiting import WaitTimeout, wait_for

_LAZY = {
    "Cluster": "tests.harness.cluster",
    "ControlPlane": "tests.harness.controlplane",
    "ProcessNode": "tests.harness.procnode",
}

__all__ = ["Cluster", "ControlPlane", "ProcessNode", "WaitTimeout", "wait_for"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
