"""The test cluster schedules as a real one: kube-scheduler binds pods to two process nodes, so
node selectors, taints and resource requests decide where a pod runs, or say why it cannot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.harness.cluster import Cluster
from tests.harness.procnode import CAPACITY
from tests.harness.waiting import wait_for
from tests.k8s.operator_support import own_cluster
from tests.k8s.podutil import python_pod, read_pod, wait_phase

pytestmark = pytest.mark.k8s

SLEEP = "import time\nwhile True:\n    time.sleep(1)\n"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with own_cluster(tmp_path_factory.mktemp("two-nodes"), crd=False, kuberay=False, nodes=2) as c:
        yield c


@pytest.fixture
def core(two_nodes: Cluster) -> Iterator[client.CoreV1Api]:
    api = two_nodes.api_client()
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


@pytest.fixture
def ns(two_nodes: Cluster) -> Iterator[str]:
    name = two_nodes.create_namespace()
    yield name
    two_nodes.delete_namespace(name)


def unschedulable(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """The scheduler's message once it has found no node for the pod (waits for it)."""

    def message() -> str | None:
        pod = read_pod(core, namespace, name)
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return str(cond.get("message"))
        assert not pod["spec"].get("nodeName"), f"{name} was bound to {pod['spec']['nodeName']}"
        return None

    return wait_for(message, 60, f"pod {namespace}/{name} marked Unschedulable")


def test_both_nodes_are_registered_and_ready(two_nodes: Cluster, core: client.CoreV1Api) -> None:
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert sorted(nodes) == ["process-node", "process-node-2"]
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"
        assert node.status.allocatable["cpu"] == CAPACITY["cpu"]


def test_a_node_selector_places_the_pod_on_that_node(
    two_nodes: Cluster, core: client.CoreV1Api, ns: str
) -> None:
    for node_name in two_nodes.node_names:
        pod_name = f"on-{node_name}"
        core.create_namespaced_pod(
            ns,
            python_pod(pod_name, SLEEP, nodeSelector={"kubernetes.io/hostname": node_name}),
        )
        running = wait_phase(core, ns, pod_name, ("Running",))
        assert running["spec"]["nodeName"] == node_name
        node = two_nodes.node_named(node_name)
        assert node.pod_processes(ns, pod_name), f"{pod_name} runs no process on {node_name}"
        other = next(n for n in two_nodes.nodes if n.name != node_name)
        assert other.pod_processes(ns, pod_name) == []


def test_a_pod_no_node_can_take_is_unschedulable_with_the_scheduler_s_reason(
    core: client.CoreV1Api, ns: str
) -> None:
    core.create_namespaced_pod(ns, python_pod("nowhere", SLEEP, nodeSelector={"disk": "ssd"}))
    assert "0/2 nodes are available" in unschedulable(core, ns, "nowhere")
    too_big = python_pod("too-big", SLEEP)
    too_big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1000"}}
    core.create_namespaced_pod(ns, too_big)
    assert "Insufficient cpu" in unschedulable(core, ns, "too-big")


def test_a_tainted_node_gets_no_new_pods(
    two_nodes: Cluster, core: client.CoreV1Api, ns: str
) -> None:
    first, second = two_nodes.node_names
    taint = {"key": "datajuicer.io/drain", "value": "test", "effect": "NoSchedule"}
    core.patch_node(first, {"spec": {"taints": [taint]}})
    try:
        for i in range(4):
            core.create_namespaced_pod(ns, python_pod(f"spread-{i}", SLEEP))
        for i in range(4):
            assert wait_phase(core, ns, f"spread-{i}", ("Running",))["spec"]["nodeName"] == second
    finally:
        core.patch_node(first, {"spec": {"taints": None}})
