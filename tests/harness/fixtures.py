"""pytest fixtures and hooks of the Kubernetes harness (imported by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the harness's dependencies load only when a test asks for the cluster
    from tests.harness.cluster import Cluster

_started: list[Cluster] = []


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real control plane with a process node, the KubeRay CRDs and the KubeRay operator, for
    the whole session."""
    from tests.harness.cluster import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("k8s")).start()
    _started.append(cluster)
    try:
        yield cluster
    finally:
        _started.remove(cluster)
        cluster.stop()
    # Nothing a pod started may outlive the session (the node kills by marker; this proves it).
    left = cluster.node.leftover_processes()
    assert left == [], f"pod processes left after the cluster stopped: {left}"


@pytest.fixture
def namespace(k8s_cluster: Cluster) -> Iterator[str]:
    """A fresh namespace (its default ServiceAccount exists), deleted after the test."""
    name = k8s_cluster.create_namespace()
    yield name
    k8s_cluster.delete_namespace(name)


def add_cluster_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """On a failed test that used the cluster, attach the component logs to its report."""
    if report.failed and _started and "k8s_cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("kubernetes component logs", _started[-1].logs()))
