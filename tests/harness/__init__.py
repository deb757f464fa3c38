"""Test harness: a real Kubernetes control plane and a node that runs pods as local processes.

`Cluster` (control plane + process node + KubeRay CRDs) backs the pytest fixtures and
`make dev-cluster`; see docs/dev-cluster.md.
"""

from tests.harness.cluster import Cluster
from tests.harness.controlplane import ControlPlane
from tests.harness.procnode import ProcessNode
from tests.harness.waiting import WaitTimeout, wait_for

__all__ = ["Cluster", "ControlPlane", "ProcessNode", "WaitTimeout", "wait_for"]
