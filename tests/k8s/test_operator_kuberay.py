"""kuberay mode: the RayCluster is accepted by the real KubeRay CRD schema, the runner waits for
it to be ready, and a cluster that is never ready fails the job."""

from __future__ import annotations

import json

import pytest
import yaml

from dj_runner import contract
from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.operator_support import (
    ROOT,
    OperatorProcess,
    apply,
    condition,
    get_json,
    job_obj,
    operator,
    runner_pods,
    wait_condition,
    wait_phase,
)

pytestmark = pytest.mark.k8s
__all__ = ["operator"]


def kuberay_job() -> dict:
    return yaml.safe_load((ROOT / "examples" / "job-kuberay.yaml").read_text())


def test_kuberay_cluster_is_accepted_and_the_runner_waits_for_it(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(k8s_cluster, namespace, kuberay_job())
    cluster = wait_for(
        lambda: get_json(k8s_cluster, namespace, "rayclusters")["items"], 60, "the RayCluster"
    )[0]
    job = job_obj(k8s_cluster, namespace, "demo-kuberay")
    assert cluster["metadata"]["name"] == "demo-kuberay-ray"
    assert cluster["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["ray-client-server-port"] == "10001"
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"  # not beyond the pod
    # The Ray pods' own identity, without an API token, created before the cluster.
    for template in (head["template"], cluster["spec"]["workerGroupSpecs"][0]["template"]):
        assert template["spec"]["serviceAccountName"] == "demo-kuberay-ray"
        assert template["spec"]["automountServiceAccountToken"] is False
    account = get_json(k8s_cluster, namespace, "serviceaccount", "demo-kuberay-ray")
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    policy = get_json(k8s_cluster, namespace, "networkpolicy", "demo-kuberay-ingress")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"datajuicer.io/job": "demo-kuberay"}}
    assert cluster["spec"]["workerGroupSpecs"][0]["replicas"] == 2
    job = wait_phase(k8s_cluster, namespace, "demo-kuberay", ("Starting",))
    assert condition(job, "ClusterReady")["status"] == "False"
    assert runner_pods(k8s_cluster, namespace, "demo-kuberay") == []

    # A ready cluster as KubeRay reports it (head pod ready); the runner then starts.
    k8s_cluster.kubectl(
        "patch",
        "raycluster",
        "demo-kuberay-ray",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "state": "ready",
                    "desiredWorkerReplicas": 2,
                    "readyWorkerReplicas": 2,
                    "conditions": [
                        {
                            "type": "HeadPodReady",
                            "status": "True",
                            "reason": "HeadPodRunningAndReady",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ],
                }
            }
        ),
    )
    wait_condition(k8s_cluster, namespace, "demo-kuberay", "ClusterReady", timeout=60)
    pods = wait_for(lambda: runner_pods(k8s_cluster, namespace, "demo-kuberay"), 60, "runner")
    args = pods[0]["spec"]["containers"][0]["args"]
    assert args[args.index("--ray-address") + 1] == (
        f"ray://demo-kuberay-ray{contract.RAY_HEAD_SERVICE_SUFFIX}.{namespace}.svc:10001"
    )
    reasons = [
        e["reason"]
        for e in get_json(
            k8s_cluster, namespace, "events", "--field-selector", "involvedObject.name=demo-kuberay"
        )["items"]
    ]
    assert "ClusterReady" in reasons

    # Suspending removes the runner and the cluster.
    k8s_cluster.kubectl(
        "patch",
        "djjob",
        "demo-kuberay",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
    )
    job = wait_phase(k8s_cluster, namespace, "demo-kuberay", ("Suspended", "Failed"), timeout=120)
    assert get_json(k8s_cluster, namespace, "rayclusters")["items"] == []


def test_a_cluster_never_ready_fails_the_job(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    job = kuberay_job()
    job["spec"]["ray"]["readyTimeoutSeconds"] = 3
    # Never ready, whatever the machine's speed: the real KubeRay operator runs in the test
    # cluster, and a head whose `ray start` is refused never becomes ready.
    job["spec"]["ray"]["headGroup"]["rayStartParams"]["num-cpus"] = "not-a-number"
    apply(k8s_cluster, namespace, job)
    failed = wait_condition(k8s_cluster, namespace, "demo-kuberay", "Failed", timeout=60)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "ClusterNotReady"
    assert failure["component"] == "ray"
    assert "readyTimeoutSeconds (3 s)" in failure["message"]
    assert runner_pods(k8s_cluster, namespace, "demo-kuberay") == []
    wait_for(
        lambda: get_json(k8s_cluster, namespace, "rayclusters")["items"] == [],
        60,
        "the RayCluster removed",
    )
