"""The binaries built from Go modules report their real, pinned versions."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness.binaries import k8s_version
from tests.harness.cluster import Cluster

pytestmark = pytest.mark.k8s

K8S_VERSION = k8s_version()


def test_kubectl_and_apiserver_report_the_pinned_version(k8s_cluster: Cluster) -> None:
    out = json.loads(k8s_cluster.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == K8S_VERSION
    assert out["serverVersion"]["gitVersion"] == K8S_VERSION
    assert K8S_VERSION.startswith("v1.36.")
    assert out["serverVersion"]["minor"] == "36"


def test_etcd_and_controller_manager_report_their_versions(k8s_cluster: Cluster) -> None:
    etcd = subprocess.run(
        [str(k8s_cluster.bin_dir / "etcd"), "--version"], capture_output=True, text=True, check=True
    )
    assert "etcd Version: 3.6." in etcd.stdout
    kcm = subprocess.run(
        [str(k8s_cluster.bin_dir / "kube-controller-manager"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert kcm.stdout.strip() == f"Kubernetes {K8S_VERSION}"


def test_helm_runs_against_the_cluster(k8s_cluster: Cluster) -> None:
    version = k8s_cluster.helm("version", "--short").stdout.strip()
    assert version.startswith("v4.2.4"), version
    releases = json.loads(k8s_cluster.helm("list", "--all-namespaces", "-o", "json").stdout)
    assert releases == []
