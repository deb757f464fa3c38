"""kuberay mode end to end: a djjob whose RayCluster the real KubeRay operator runs, its head and
worker pods real Ray nodes on the process node, the runner pod driving them over Ray Client;
the partitions run on the worker pods and the output is byte-identical to a local run, also
when a worker pod is deleted mid-job."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from dj_operator.status import times
from tests.harness.cluster import Cluster
from tests.harness.ports import free_port, free_ray_ports
from tests.harness.waiting import wait_for
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
    runner_pods,
    short_tmp,
    wait_condition,
    with_test_ops,
)

pytestmark = pytest.mark.k8s
__all__ = ["operator"]

JOB = "kr"


def kuberay_job(workers: int = 1) -> dict:
    """examples/job-kuberay.yaml on ports of its own: a head with no CPUs for tasks and
    `workers` workers of 1 CPU, each with a small object store."""
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
            "replicas": workers,
            "minReplicas": workers,
            "maxReplicas": workers,
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


def slow_job() -> dict:
    """Two workers; each partition (50 rows) holds its worker for 4 s in a test op, so a worker
    pod can be deleted while it runs one."""
    job = with_test_ops(kuberay_job(workers=2))
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 4.0}})
    return job


def logged(cluster: Cluster, namespace: str, event_type: str) -> list[tuple[str, dict]]:
    """(host, record) of every event of `event_type` in the job's log; the host is the pod
    whose process wrote the segment (its name with `-` as `_`)."""
    log_dir = claim_dir(cluster, namespace) / ".datajuicer" / namespace / JOB
    found = []
    for path in log_dir.rglob("events-*.jsonl"):
        host = path.name.removeprefix("events-").rsplit("-", 3)[0]
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event_type") == event_type:
                found.append((host, record))
    return found


def print_timeline(cluster: Cluster, namespace: str) -> None:
    """The runners' connect and processing times, from the event log (for the figures)."""
    for kind in ("job_start", "ray_connected", "processing_start", "job_complete", "job_failed"):
        for host, record in sorted(
            logged(cluster, namespace, kind), key=lambda e: e[1]["timestamp"]
        ):
            print(f"{record['timestamp']:.1f} {host} {kind}: {record['message'][:120]}")


def event_writers(cluster: Cluster, namespace: str, event_type: str) -> set[str]:
    """The pods whose processes wrote events of `event_type` in the job's log."""
    return {host for host, _ in logged(cluster, namespace, event_type)}


def test_kuberay_job_runs_its_partitions_on_the_worker_pod(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    core: client.CoreV1Api,
    reference: bytes,
) -> None:
    # The Ray pods KubeRay makes from the operator's templates (and the runner pod) must be
    # admitted under Pod Security Admission `restricted`.
    k8s_cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    demo_data(k8s_cluster, namespace)
    started = time.monotonic()
    apply(k8s_cluster, namespace, kuberay_job())
    # While the job runs, its status, `kubectl get` and `kubectl describe` show the RayCluster
    # as KubeRay reports it: ready, its head ready, 1 of 1 worker ready.
    expected = {
        "name": f"{JOB}-ray",
        "state": "ready",
        "headReady": True,
        "readyWorkers": 1,
        "desiredWorkers": 1,
        "workers": "1/1",
    }

    seen: list[str] = []
    workers: list[str] = []

    def cluster_shown() -> bool:
        """The status, the WORKERS column and the describe section agree, in one poll (the
        cluster is removed once the job ends, so all three are read while it runs, and so is
        the name of its worker pod)."""
        status = job_obj(k8s_cluster, namespace, JOB).get("status") or {}
        if status.get("rayCluster") != expected:
            return False
        workers[:] = [
            p.metadata.name
            for p in raycluster.ray_pods(core, namespace, f"{JOB}-ray")
            if p.metadata.labels["ray.io/node-type"] == "worker"
        ]
        table = k8s_cluster.kubectl("get", "djjob", JOB, "-n", namespace, "-o", "wide").stdout
        described = k8s_cluster.kubectl("describe", "djjob", JOB, "-n", namespace).stdout
        seen[:] = [table, described]
        # The table's columns are aligned; empty cells (no progress yet) are blanks.
        header, row = table.splitlines()[:2]
        if row[header.index("WORKERS") :].split()[0] != "1/1":
            return False
        # status.rayCluster, a section of its own (not the children's `Ray Cluster: kr-ray`).
        section = re.search(r"^  Ray Cluster:\n((?:    .*\n)+)", described, re.M)
        fields = (("Desired Workers", "1"), ("Ready Workers", "1"), ("State", "ready"))
        return bool(section) and all(
            re.search(rf"^\s+{key}:\s+{value}$", section.group(1), re.M) for key, value in fields
        )

    try:
        wait_for(cluster_shown, 300, f"status.rayCluster of {JOB} to show {expected}", interval=0.5)
    finally:
        print(*seen, sep="\n")
    job = wait_condition(k8s_cluster, namespace, JOB, "Succeeded", timeout=400)
    elapsed = time.monotonic() - started
    try:
        output = (claim_dir(k8s_cluster, namespace) / "output" / "result.jsonl").read_bytes()
        assert output == reference
        status = job["status"]
        assert status["restarts"] == 0
        assert status["children"]["rayCluster"] == f"{JOB}-ray"
        # The startup milestones, recorded once each, in kuberay mode's order: the cluster is
        # ready before the runner pod is made (RFC 3339 in UTC: text order is time order).
        line = status["timeline"]
        assert set(line) == {"rayReady", "podCreated", "firstCheckpoint"}, line
        moments = [
            job["metadata"]["creationTimestamp"],
            line["rayReady"],
            line["podCreated"],
            line["firstCheckpoint"],
            status["completionTime"],
        ]
        # Compared to the second: completionTime, like every Kubernetes time, has no fraction,
        # and a small job ends within the second of its first checkpoint.
        seconds = [times.parse(m).replace(microsecond=0) for m in moments]
        assert seconds == sorted(seconds), line
        # The finished job released its cluster, and its status says so.
        wait_for(
            lambda: "rayCluster" not in job_obj(k8s_cluster, namespace, JOB)["status"],
            60,
            f"status.rayCluster of {JOB} removed with the cluster",
        )
        reasons = [e["reason"] for e in events(k8s_cluster, namespace, JOB)]
        assert "ClusterReady" in reasons and "Succeeded" in reasons, reasons
        # Its pods may be gone by now: the worker pod's name was read while the job ran.
        (worker,) = workers
        # The head has no CPUs for tasks: every partition ran in a Ray worker of the worker pod.
        writers = event_writers(k8s_cluster, namespace, "partition_start")
        assert writers == {worker.replace("-", "_")}, writers
    finally:
        print(f"kuberay djjob: apply -> Succeeded in {elapsed:.1f}s")
        print(k8s_cluster.kubectl("describe", "djjob", JOB, "-n", namespace).stdout[-3000:])
    assert job_obj(k8s_cluster, namespace, JOB)["status"]["phase"] == "Succeeded"


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return local_reference(
        tmp_path_factory.mktemp("slow-reference"),
        slow_job()["spec"]["recipe"],
        {"input/demo.jsonl": DEMO_DATA.read_text()},
    )


def wait_partition_started(cluster: Cluster, namespace: str) -> None:
    wait_for(
        lambda: event_writers(cluster, namespace, "partition_start"),
        240,
        "a partition started on a worker pod",
        interval=0.2,
    )


def test_a_worker_pod_deleted_mid_job_is_replaced_and_the_output_is_identical(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    core: client.CoreV1Api,
    slow_reference: bytes,
) -> None:
    demo_data(k8s_cluster, namespace)
    started = time.monotonic()
    apply(k8s_cluster, namespace, slow_job())
    cluster = f"{JOB}-ray"

    def worker_pods() -> dict[str, str]:
        return {
            p.metadata.name.replace("-", "_"): p.metadata.name
            for p in raycluster.ray_pods(core, namespace, cluster)
            if p.metadata.labels["ray.io/node-type"] == "worker"
        }

    def a_busy_worker() -> str | None:
        busy = event_writers(k8s_cluster, namespace, "partition_start") & set(worker_pods())
        return worker_pods()[sorted(busy)[0]] if busy else None

    victim = wait_for(a_busy_worker, 240, "a partition started on a worker pod", interval=0.2)
    job = job_obj(k8s_cluster, namespace, JOB)
    assert job["status"]["phase"] == "Running"
    # At once, as a crashed node goes (with a grace period Ray drains it: it lets its tasks end).
    core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
    wait_for(
        lambda: victim not in worker_pods().values() and len(worker_pods()) == 2,
        120,
        f"KubeRay to replace the deleted worker pod {victim}",
    )
    job = wait_condition(k8s_cluster, namespace, JOB, "Succeeded", timeout=400)
    elapsed = time.monotonic() - started
    print(f"kuberay djjob with a worker deleted: apply -> Succeeded in {elapsed:.1f}s")
    print(f"restarts: {job['status']['restarts']}; attempts: {job['status']['attempts']}")
    output = (claim_dir(k8s_cluster, namespace) / "output" / "result.jsonl").read_bytes()
    assert output == slow_reference
    # The partitions ran on the worker pods only (the head has no CPUs), on more than one.
    writers = event_writers(k8s_cluster, namespace, "partition_start")
    workers = {w for w in writers if "_workers_worker_" in w}
    assert writers == workers and len(workers) >= 2, writers
    assert victim.replace("-", "_") in workers
    # The partition the deleted worker ran was retried, and finished elsewhere.
    retries = [r["message"] for _, r in logged(k8s_cluster, namespace, "partition_retry")]
    print("partition retries:", retries)
    assert retries, "no partition was retried after its worker pod was deleted"


def test_the_head_pod_deleted_mid_job_the_next_runner_resumes_to_identical_output(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    core: client.CoreV1Api,
    slow_reference: bytes,
) -> None:
    demo_data(k8s_cluster, namespace)
    started = time.monotonic()
    apply(k8s_cluster, namespace, slow_job())
    cluster = f"{JOB}-ray"
    wait_partition_started(k8s_cluster, namespace)
    (head,) = [
        p.metadata.name
        for p in raycluster.ray_pods(core, namespace, cluster)
        if p.metadata.labels["ray.io/node-type"] == "head"
    ]
    # At once, as a crashed node goes: with a grace period the head finishes the running job.
    core.delete_namespaced_pod(head, namespace, grace_period_seconds=0)
    job = wait_condition(k8s_cluster, namespace, JOB, "Succeeded", timeout=500)
    elapsed = time.monotonic() - started
    status = job["status"]
    print(f"kuberay djjob with the head deleted: apply -> Succeeded in {elapsed:.1f}s")
    print(f"restarts: {status['restarts']}; attempts: {status['attempts']}")
    output = (claim_dir(k8s_cluster, namespace) / "output" / "result.jsonl").read_bytes()
    assert output == slow_reference
    # The first runner lost Ray (exit 7); a later one resumed from the checkpoints.
    assert status["attempts"][0]["exitCode"] == 7, status["attempts"]
    assert status["attempts"][-1]["exitCode"] == 0
    reasons = [e["reason"] for e in events(k8s_cluster, namespace, JOB)]
    assert "Retrying" in reasons, reasons
    print("events:", reasons)
    print_timeline(k8s_cluster, namespace)


def test_the_runner_pod_killed_mid_job_the_next_one_reuses_the_cluster(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    slow_reference: bytes,
) -> None:
    demo_data(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, slow_job())
    cluster = f"{JOB}-ray"
    wait_partition_started(k8s_cluster, namespace)
    uid = raycluster.get(custom, namespace, cluster)["metadata"]["uid"]
    k8s_cluster.node.kill_pod_process(namespace, f"{JOB}-runner-1", signal.SIGKILL)
    # The next runner starts on the same RayCluster (it is removed only once the job ends;
    # the runner needs at least one 4 s partition to get there).
    wait_for(
        lambda: len(runner_pods(k8s_cluster, namespace, JOB)) == 2, 120, "the second runner pod"
    )
    assert raycluster.get(custom, namespace, cluster)["metadata"]["uid"] == uid
    job = wait_condition(k8s_cluster, namespace, JOB, "Succeeded", timeout=400)
    status = job["status"]
    print(f"restarts: {status['restarts']}; attempts: {status['attempts']}")
    output = (claim_dir(k8s_cluster, namespace) / "output" / "result.jsonl").read_bytes()
    assert output == slow_reference
    assert status["attempts"][0]["exitCode"] == 137, status["attempts"]
    assert status["attempts"][-1]["exitCode"] == 0
    # Both runners joined that cluster.
    connected = logged(k8s_cluster, namespace, "ray_connected")
    assert sorted(host for host, _ in connected) == [f"{JOB}_runner_1", f"{JOB}_runner_2"]
