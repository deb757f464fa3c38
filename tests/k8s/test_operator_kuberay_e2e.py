"""kuberay mode end to end: a djjob whose RayCluster the real KubeRay operator runs, its head and
worker pods real Ray nodes on the process node, the runner pod driving them over Ray Client;
the partitions run on the worker pod and the output is byte-identical to a local run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.harness.cluster import Cluster
from tests.harness.ports import free_port, free_ray_ports
from tests.k8s import raycluster
from tests.k8s.operator_support import (
    DEMO_DATA,
    ROOT,
    OperatorProcess,
    apply,
    demo_data,
    events,
    job_obj,
    local_reference,
    operator,
    short_tmp,
    wait_condition,
)

pytestmark = pytest.mark.k8s
__all__ = ["operator"]

JOB = "kr"


def kuberay_job() -> dict:
    """examples/job-kuberay.yaml on ports of its own: a head with no CPUs for tasks and one
    worker of 1 CPU, each with a small object store."""
    job = short_tmp(yaml.safe_load((ROOT / "examples" / "job-kuberay.yaml").read_text()))
    job["metadata"]["name"] = JOB
    ports = free_ray_ports()
    store = {"object-store-memory": raycluster.OBJECT_STORE_BYTES}
    small = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    ray = job["spec"]["ray"]
    ray["headGroup"] = {
        "rayStartParams": {"num-cpus": "0", **store},
        "resources": small,
        "ports": {"gcs": ports.gcs, "client": ports.client, "dashboard": free_port()},
    }
    ray["workerGroups"] = [
        {
            "name": "workers",
            "replicas": 1,
            "minReplicas": 1,
            "maxReplicas": 1,
            "rayStartParams": {"num-cpus": "1", **store},
            "resources": small,
        }
    ]
    return job


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    recipe = kuberay_job()["spec"]["recipe"]
    return local_reference(
        tmp_path_factory.mktemp("reference"), recipe, {"input/demo.jsonl": DEMO_DATA.read_text()}
    )


def claim_dir(cluster: Cluster, namespace: str) -> Path:
    return cluster.node.pvc_dir(namespace, f"{JOB}-data")


def event_writers(cluster: Cluster, namespace: str, event_type: str) -> set[str]:
    """The hosts (pod names) whose processes wrote events of `event_type` in the job's log."""
    log_dir = claim_dir(cluster, namespace) / ".datajuicer" / namespace / JOB
    hosts = set()
    for path in log_dir.rglob("events-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event_type") == event_type:
                hosts.add(path.name.removeprefix("events-").rsplit("-", 3)[0])
    return hosts


def test_kuberay_job_runs_its_partitions_on_the_worker_pod(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    core: client.CoreV1Api,
    reference: bytes,
) -> None:
    demo_data(k8s_cluster, namespace)
    started = time.monotonic()
    apply(k8s_cluster, namespace, kuberay_job())
    job = wait_condition(k8s_cluster, namespace, JOB, "Succeeded", timeout=400)
    elapsed = time.monotonic() - started
    try:
        output = (claim_dir(k8s_cluster, namespace) / "output" / "result.jsonl").read_bytes()
        assert output == reference
        status = job["status"]
        assert status["restarts"] == 0
        assert status["children"]["rayCluster"] == f"{JOB}-ray"
        reasons = [e["reason"] for e in events(k8s_cluster, namespace, JOB)]
        assert "ClusterReady" in reasons and "Succeeded" in reasons, reasons
        pods = raycluster.ray_pods(core, namespace, f"{JOB}-ray")
        (worker,) = [
            p.metadata.name for p in pods if p.metadata.labels["ray.io/node-type"] == "worker"
        ]
        # The head has no CPUs for tasks: every partition ran in a Ray worker of the worker pod.
        writers = event_writers(k8s_cluster, namespace, "partition_start")
        assert writers == {worker.replace("-", "_")}, writers
    finally:
        print(f"kuberay djjob: apply -> Succeeded in {elapsed:.1f}s")
        print(k8s_cluster.kubectl("describe", "djjob", JOB, "-n", namespace).stdout[-3000:])
    assert job_obj(k8s_cluster, namespace, JOB)["status"]["phase"] == "Succeeded"
