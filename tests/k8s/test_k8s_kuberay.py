"""KubeRay in the test cluster: the CRDs (installed server-side, the real schema validates
RayClusters) and the real operator, whose Ray head and worker pods form real Ray clusters on the
process node."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness import proctree
from tests.harness.cluster import Cluster
from tests.harness.podrunner import POD_MARKER
from tests.harness.ports import RayPorts, free_ray_ports
from tests.harness.waiting import wait_for
from tests.k8s import raycluster
from tests.k8s.podutil import wait_gone

pytestmark = pytest.mark.k8s

# Suspended: the operator runs in the test cluster, and these tests check only the schema.
RAY_CLUSTER = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {"name": "dj-ray"},
    "spec": {
        "suspend": True,
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
        "rayservices.ray.io",
        "-o",
        "json",
        "--show-managed-fields",
    )
    crds = json.loads(out.stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "rayclusters.ray.io",
        "rayjobs.ray.io",
        "rayservices.ray.io",
    ]
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


# -- the real KubeRay operator ---------------------------------------------------------------


@dataclass(frozen=True)
class RunningRayCluster:
    namespace: str
    name: str
    ports: RayPorts
    ready_seconds: float

    @property
    def address(self) -> str:
        return raycluster.client_address(self.name, self.namespace, self.ports)


def _start_ray_cluster(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    workers: int = 1,
    grace_seconds: int = 30,
) -> RunningRayCluster:
    ports = free_ray_ports()
    started = time.monotonic()
    manifest = raycluster.ray_cluster(name, ports, workers, grace_seconds)
    raycluster.create(custom, namespace, manifest)
    raycluster.wait_ready(custom, namespace, name, workers)
    return RunningRayCluster(namespace, name, ports, time.monotonic() - started)


@pytest.fixture(scope="module")
def ray_cluster(k8s_cluster: Cluster) -> Iterator[RunningRayCluster]:
    """One RayCluster (head + 1 worker) for the tests of this module that only read it."""
    namespace = k8s_cluster.create_namespace("kuberay")
    api = k8s_cluster.api_client()
    try:
        yield _start_ray_cluster(client.CustomObjectsApi(api), namespace, "rc")
    finally:
        k8s_cluster.delete_namespace(namespace)
        api.close()


def _memory_report(node: Any, namespace: str, pod: str) -> str:
    """RSS and PSS of a pod's processes, in MB, total and per process (for the docs' figures)."""
    pids = node.pod_processes(namespace, pod)
    rss = sum(proctree.rss_bytes(p) for p in pids) >> 20
    pss = sum(proctree.pss_bytes(p) for p in pids) >> 20
    each = ", ".join(
        f"{proctree.cmdline(p).split()[0].rsplit('/', 1)[-1]}={proctree.pss_bytes(p) >> 20}"
        for p in pids
    )
    return f"RSS {rss} MB, PSS {pss} MB ({each})"


def test_operator_runs_with_its_own_identity_and_no_fixed_ports(k8s_cluster: Cluster) -> None:
    operator = k8s_cluster.kuberay_operator
    assert operator is not None and operator.pid is not None
    argv = proctree.cmdline(operator.pid)
    assert "--enable-leader-election=false" in argv
    assert "--metrics-addr=0" in argv and "--health-probe-bind-address=0" in argv
    assert proctree.environ(operator.pid)["ENABLE_PROBES_INJECTION"] == "false"
    can_i = k8s_cluster.kubectl(
        "auth", "can-i", "create", "pods", "--as=kuberay-operator", "-n", "default"
    )
    assert can_i.stdout.strip() == "yes"
    cannot = k8s_cluster.kubectl(
        "auth", "can-i", "create", "nodes", "--as=kuberay-operator", check=False
    )
    assert cannot.stdout.strip() == "no"


def test_raycluster_becomes_ready_and_a_pod_runs_a_task_on_its_worker(
    k8s_cluster: Cluster, core: client.CoreV1Api, ray_cluster: RunningRayCluster
) -> None:
    rc, node = ray_cluster, k8s_cluster.node
    pods = raycluster.ray_pods(core, rc.namespace, rc.name)
    kinds = sorted(p.metadata.labels["ray.io/node-type"] for p in pods)
    assert kinds == ["head", "worker"]
    report = raycluster.run_driver(core, node.logs, rc.namespace, "driver", rc.address, 2)
    assert len(report["alive"]) == 2 and len(report["workers"]) == 1
    assert report["ran_on"] == report["workers"]
    # Each Ray pod keeps its Ray state in its own TMPDIR, never in the host's /tmp/ray.
    head = next(p.metadata.name for p in pods if p.metadata.labels["ray.io/node-type"] == "head")
    head_tmp = node.pod_dir(rc.namespace, head) / "tmp" / "ray"
    assert (head_tmp / "ray_current_cluster").exists()
    for pod in pods:
        name = pod.metadata.name
        commands = " ".join(proctree.cmdline(p) for p in node.pod_processes(rc.namespace, name))
        assert "raylet" in commands, commands
        kind = pod.metadata.labels["ray.io/node-type"]
        print(f"memory of the Ray {kind}: {_memory_report(node, rc.namespace, name)}")
    print(f"RayCluster ready {rc.ready_seconds:.1f}s after create")


def test_a_deleted_worker_pod_is_replaced_and_rejoins(
    k8s_cluster: Cluster,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    ray_cluster: RunningRayCluster,
) -> None:
    rc = ray_cluster
    (worker,) = [
        p
        for p in raycluster.ray_pods(core, rc.namespace, rc.name)
        if p.metadata.labels["ray.io/node-type"] == "worker"
    ]
    before = raycluster.run_driver(
        core, k8s_cluster.node.logs, rc.namespace, "before", rc.address, 2
    )
    deleted = time.monotonic()
    core.delete_namespaced_pod(worker.metadata.name, rc.namespace)
    wait_gone(core, rc.namespace, worker.metadata.name, timeout=60)
    # SIGTERM to `ray start` alone: it drains its node through the live GCS and exits, long
    # before the 30 s grace period (a SIGTERM to the whole process group made it wait 30 s).
    assert time.monotonic() - deleted < 20

    def replaced() -> str | None:
        for pod in raycluster.ray_pods(core, rc.namespace, rc.name):
            labels, meta = pod.metadata.labels, pod.metadata
            if (
                labels["ray.io/node-type"] == "worker"
                and meta.uid != worker.metadata.uid
                and meta.deletion_timestamp is None
                and pod.status.phase == "Running"
            ):
                return str(meta.name)
        return None

    wait_for(replaced, 120, "a new worker pod Running")
    raycluster.wait_ready(custom, rc.namespace, rc.name, 1)
    after = raycluster.run_driver(core, k8s_cluster.node.logs, rc.namespace, "after", rc.address, 2)
    assert len(after["alive"]) == 2
    assert after["workers"] != before["workers"]  # a new Ray node joined
    assert before["workers"][0] in after["dead"]  # the old one is known dead
    assert after["ran_on"] == after["workers"]


def test_two_clusters_in_two_namespaces_stay_separate(
    k8s_cluster: Cluster,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    ray_cluster: RunningRayCluster,
    namespace: str,
) -> None:
    other = _start_ray_cluster(custom, namespace, "rc")  # same name, another namespace
    assert {other.ports.gcs, other.ports.client}.isdisjoint(
        {ray_cluster.ports.gcs, ray_cluster.ports.client}
    )
    logs = k8s_cluster.node.logs
    first = raycluster.run_driver(core, logs, ray_cluster.namespace, "one", ray_cluster.address, 2)
    second = raycluster.run_driver(core, logs, namespace, "two", other.address, 2)
    assert len(first["alive"]) == 2 and len(second["alive"]) == 2
    assert set(first["alive"]).isdisjoint(second["alive"])
    assert second["ran_on"] == second["workers"]


def test_deleting_a_raycluster_leaves_no_ray_process(
    k8s_cluster: Cluster,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
) -> None:
    node = k8s_cluster.node
    grace = 10
    rc = _start_ray_cluster(custom, namespace, "short", grace_seconds=grace)
    pods = raycluster.ray_pods(core, namespace, rc.name)
    uids = [p.metadata.uid for p in pods]

    def ray_processes() -> dict[int, str] | None:
        """The pods' processes, once both raylets and the GCS run (they start after `ready`)."""
        found = {
            p: proctree.cmdline(p)
            for pod in pods
            for p in node.pod_processes(namespace, pod.metadata.name)
        }
        programs = [c.split()[0].rsplit("/", 1)[-1] for c in found.values() if c]
        return found if programs.count("raylet") == 2 and "gcs_server" in programs else None

    processes = wait_for(ray_processes, 60, "two raylets and a GCS running")
    started = time.monotonic()
    custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", rc.name)
    wait_for(lambda: not raycluster.ray_pods(core, namespace, rc.name), 60, "the Ray pods removed")
    # The pods go within their grace period (a worker whose GCS went first waits for it).
    assert time.monotonic() - started < grace + 15
    left = [p for p in processes if proctree.alive(p)]
    left += [p for uid in uids for p in proctree.with_env(POD_MARKER, uid)]
    assert left == [], {p: proctree.cmdline(p) for p in left}
