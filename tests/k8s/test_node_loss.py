"""A node lost mid-job: on a cluster of two process nodes, the node running the runner (and, in
kuberay mode, the Ray head and worker) dies: its processes killed, nothing more reported.
Kubernetes notices, taints the node and evicts the pods after `nodeLostTolerationSeconds`; no
kubelet is left to end them, so the operator removes them, KubeRay replaces the Ray pods, and
the next attempt resumes on the other node, to the output of a local run."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from dj_runner.store.workdir import WorkDir
from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.operator_support import (
    DEMO_DATA,
    OperatorProcess,
    apply,
    demo_data,
    events,
    example_job,
    local_reference,
    own_cluster,
    runner_pods,
    wait_condition,
    with_test_ops,
)

pytestmark = pytest.mark.k8s


@pytest.fixture
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh cluster for each test: each loses its second node for good."""
    with own_cluster(tmp_path_factory.mktemp("node-loss"), nodes=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    recipe = example_job()["spec"]["recipe"]
    return local_reference(
        tmp_path_factory.mktemp("reference"), recipe, {"input/demo.jsonl": DEMO_DATA.read_text()}
    )


def runner_on(cluster: Cluster, namespace: str, pod: str, job: str = "demo") -> str | None:
    """The node a runner pod runs on, once it is Running there."""
    pods = {p["metadata"]["name"]: p for p in runner_pods(cluster, namespace, job)}
    current = pods.get(pod)
    if not current or current["status"].get("phase") != "Running":
        return None
    return str(current["spec"]["nodeName"])


def test_a_lost_node_s_runner_is_replaced_on_the_other_node_to_identical_output(
    two_nodes: Cluster, reference: bytes, tmp_path: Path
) -> None:
    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    core = client.CoreV1Api(api)
    first, second = two_nodes.node_names
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    try:
        demo_data(two_nodes, namespace)
        job = with_test_ops(example_job())
        job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 3}})
        job["spec"]["runner"].update({"nodeLostTolerationSeconds": 5, "gracePeriodSeconds": 1})
        # The first attempt goes to the node that will be lost: the other one is cordoned.
        drain = {"key": "datajuicer.io/test", "value": "hold", "effect": "NoSchedule"}
        core.patch_node(first, {"spec": {"taints": [drain]}})
        apply(two_nodes, namespace, job)
        wait_for(
            lambda: runner_on(two_nodes, namespace, "demo-runner-1") == second,
            120,
            f"demo-runner-1 running on {second}",
        )
        core.patch_node(first, {"spec": {"taints": None}})
        work = two_nodes.node.pvc_dir(namespace, "demo-data") / ".datajuicer" / namespace / "demo"
        wait_for(lambda: WorkDir(work).plan_path.exists(), 120, "the plan")
        # A random instant while the runner works: a deliberate delay, not a synchronisation.
        time.sleep(random.uniform(0.5, 4.0))
        two_nodes.node_named(second).lose()

        done = wait_condition(two_nodes, namespace, "demo", "Finished", timeout=420)
        status = done["status"]
        assert status["phase"] == "Succeeded", status
        out = two_nodes.node.pvc_dir(namespace, "demo-data") / "output" / "result.jsonl"
        assert out.read_bytes() == reference
        first_attempt = status["attempts"][0]
        assert first_attempt["stopReason"] == "NodeLost", status["attempts"]
        assert status["attempts"][-1]["exitCode"] == 0
        # The retry avoided the lost node (tainted unreachable), and the lost pod is gone.
        names = [p["metadata"]["name"] for p in runner_pods(two_nodes, namespace, "demo")]
        assert "demo-runner-1" not in names
        last = core.read_namespaced_pod(names[-1], namespace)
        assert last.spec.node_name == first
        lost = [e for e in events(two_nodes, namespace, "demo") if e["reason"] == "RunnerLost"]
        assert lost and f"demo-runner-1 on node {second}" in lost[0]["message"]
        assert lost[0]["type"] == "Warning"
        node = core.read_node(second)
        assert {t.key for t in node.spec.taints or []} >= {"node.kubernetes.io/unreachable"}
    finally:
        if op.proc is not None and op.proc.poll() is None:
            assert op.stop() == 0, op.tail()
        api.close()


def test_a_lost_node_under_a_ray_cluster_is_replaced_and_the_job_resumes(
    two_nodes: Cluster, tmp_path: Path
) -> None:
    """kuberay mode: the runner, the Ray head and its worker all on the node that dies."""
    from tests.k8s.test_operator_kuberay_e2e import JOB, kuberay_job

    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    core = client.CoreV1Api(api)
    first, second = two_nodes.node_names
    job = with_test_ops(kuberay_job(workers=1))
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 3}})
    job["spec"]["runner"].update({"nodeLostTolerationSeconds": 5, "gracePeriodSeconds": 1})
    expected = local_reference(
        tmp_path / "reference", job["spec"]["recipe"], {"input/demo.jsonl": DEMO_DATA.read_text()}
    )
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    try:
        demo_data(two_nodes, namespace)
        drain = {"key": "datajuicer.io/test", "value": "hold", "effect": "NoSchedule"}
        core.patch_node(first, {"spec": {"taints": [drain]}})
        apply(two_nodes, namespace, job)
        wait_for(
            lambda: runner_on(two_nodes, namespace, f"{JOB}-runner-1", JOB) == second,
            300,
            f"{JOB}-runner-1 running on {second}",
        )
        core.patch_node(first, {"spec": {"taints": None}})
        ray_pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster").items
        assert {p.spec.node_name for p in ray_pods} == {second}, "the Ray pods are elsewhere"
        work = two_nodes.node.pvc_dir(namespace, f"{JOB}-data") / ".datajuicer" / namespace / JOB
        wait_for(lambda: WorkDir(work).plan_path.exists(), 300, "the plan")
        two_nodes.node_named(second).lose()

        done = wait_condition(two_nodes, namespace, JOB, "Finished", timeout=600)
        status = done["status"]
        assert status["phase"] == "Succeeded", status
        out = two_nodes.node.pvc_dir(namespace, f"{JOB}-data") / "output" / "result.jsonl"
        assert out.read_bytes() == expected
        assert status["attempts"][0]["stopReason"] == "NodeLost", status["attempts"]
        reasons = {e["reason"] for e in events(two_nodes, namespace, JOB)}
        assert {"RunnerLost", "RayPodLost"} <= reasons, reasons
        ray_pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster").items
        assert all(p.spec.node_name == first for p in ray_pods)  # replaced on the other node
    finally:
        if op.proc is not None and op.proc.poll() is None:
            assert op.stop() == 0, op.tail()
        api.close()
