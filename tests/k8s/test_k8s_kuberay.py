"""The KubeRay CRDs are installed server-side; the real schema validates RayClusters."""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.cluster import Cluster

pytestmark = pytest.mark.k8s

RAY_CLUSTER = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {"name": "dj-ray"},
    "spec": {
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0"},
            "template": {
                "spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.60.0"}]}
            },
        },
        "workerGroupSpecs": [
            {
                "groupName": "workers",
                "replicas": 1,
                "minReplicas": 0,
                "maxReplicas": 2,
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0"}]
                    }
                },
            }
        ],
    },
}


def test_crds_are_established_with_the_pinned_schema(k8s_cluster: Cluster) -> None:
    out = k8s_cluster.kubectl(
        "get",
        "crd",
        "rayclusters.ray.io",
        "rayjobs.ray.io",
        "-o",
        "json",
        "--show-managed-fields",
    )
    crds = json.loads(out.stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in crds) == ["rayclusters.ray.io", "rayjobs.ray.io"]
    for crd in crds:
        managers = {m["manager"] for m in crd["metadata"]["managedFields"]}
        assert "kubectl" in managers  # applied server-side by kubectl
        assert any(v["name"] == "v1" and v["served"] for v in crd["spec"]["versions"])


def test_valid_raycluster_is_accepted(api: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(
        "ray.io",
        "v1",
        namespace,
        "rayclusters",
        copy.deepcopy(RAY_CLUSTER),
        field_validation="Strict",
    )
    assert created["metadata"]["uid"]


def test_raycluster_with_a_wrong_field_type_is_rejected(
    api: client.ApiClient, namespace: str
) -> None:
    bad = copy.deepcopy(RAY_CLUSTER)
    bad["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "two"
    custom = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as raised:
        custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", bad)
    assert raised.value.status == 422
    assert "maxReplicas" in raised.value.body


def test_raycluster_with_an_unknown_field_is_rejected(k8s_cluster: Cluster, namespace: str) -> None:
    bad = copy.deepcopy(RAY_CLUSTER)
    bad["metadata"]["name"] = "typo"
    bad["spec"]["workerGroupSpecs"][0]["groupNmae"] = "workers"
    result = k8s_cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(bad),
        check=False,
    )
    assert result.returncode != 0
    assert 'unknown field "spec.workerGroupSpecs[0].groupNmae"' in result.stderr


def test_raycluster_without_head_group_is_rejected(api: client.ApiClient, namespace: str) -> None:
    bad = copy.deepcopy(RAY_CLUSTER)
    del bad["spec"]["headGroupSpec"]
    custom = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as raised:
        custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", bad)
    assert raised.value.status == 422
    assert "headGroupSpec" in raised.value.body
