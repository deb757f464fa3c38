"""The operator on the real control plane: the example job from apply to Succeeded, restarts
after runner kills and pod deletion, an operator killed mid-reconcile, suspend/resume, delete."""

from __future__ import annotations

import random
import signal
import time
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
    condition,
    demo_data,
    events,
    example_job,
    get_json,
    job_obj,
    local_reference,
    operator,
    runner_pods,
    runner_writes_status,
    wait_condition,
    with_test_ops,
)

pytestmark = pytest.mark.k8s
__all__ = ["operator"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The example recipe's output from a local `dj-runner run` on the same data."""
    recipe = example_job()["spec"]["recipe"]
    return local_reference(
        tmp_path_factory.mktemp("reference"), recipe, {"input/demo.jsonl": DEMO_DATA.read_text()}
    )


def output_of(cluster: Cluster, namespace: str) -> bytes:
    return (cluster.node.pvc_dir(namespace, "demo-data") / "output" / "result.jsonl").read_bytes()


def work_dir(cluster: Cluster, namespace: str) -> Path:
    return cluster.node.pvc_dir(namespace, "demo-data") / ".datajuicer" / namespace / "demo"


def pod_running(cluster: Cluster, namespace: str, name: str) -> bool:
    pods = {p["metadata"]["name"]: p for p in runner_pods(cluster, namespace, "demo")}
    pod = pods.get(name)
    return bool(
        pod and pod["status"].get("phase") == "Running" and cluster.node.pod_pid(namespace, name)
    )


def test_example_job_succeeds_with_the_output_of_a_local_run(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess, reference: bytes
) -> None:
    # Every pod the operator makes must be admitted under Pod Security Admission `restricted`.
    k8s_cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    demo_data(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, example_job())  # examples/job.yaml (+ a short TMPDIR)
    waited = k8s_cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Succeeded",
        "djjob/demo",
        "--timeout=240s",
        timeout=260,
    )
    assert "condition met" in waited.stdout
    assert output_of(k8s_cluster, namespace) == reference

    job = job_obj(k8s_cluster, namespace, "demo")
    status = job["status"]
    assert status["phase"] == "Succeeded"
    assert status["restarts"] == 0
    assert [a["index"] for a in status["attempts"]] == [1]
    assert status["attempts"][0]["exitCode"] == 0
    assert status["children"] == {
        "configMap": "demo-recipe",
        "claim": "demo-data",
        "serviceAccount": "demo-runner",
        "networkPolicy": "demo-ingress",
        "runnerPod": "demo-runner-1",
    }
    assert status["workDir"] == f"/data/.datajuicer/{namespace}/demo"
    assert status["outputPath"] == "/data/output/result.jsonl"
    assert status["startTime"] and status["completionTime"]
    assert condition(job, "Running")["status"] == "False"
    assert condition(job, "Finished")["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    if runner_writes_status():
        progress = status["progress"]
        assert progress["partitionsCompleted"] == progress["partitionsTotal"] > 0
        assert progress["samplesOut"] == reference.count(b"\n")

    # Every child is labelled and owned by the job; the claim is kept (whenDeleted: Retain).
    uid = job["metadata"]["uid"]
    for kind, name in (
        ("configmap", "demo-recipe"),
        ("serviceaccount", "demo-runner"),
        ("role", "demo-runner"),
        ("rolebinding", "demo-runner"),
        ("networkpolicy", "demo-ingress"),
        ("pod", "demo-runner-1"),
    ):
        obj = get_json(k8s_cluster, namespace, kind, name)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "datajuicer-operator"
        assert obj["metadata"]["labels"]["datajuicer.io/job"] == "demo"
        assert [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [uid], kind
    claim = get_json(k8s_cluster, namespace, "pvc", "demo-data")
    assert "ownerReferences" not in claim["metadata"]

    table = k8s_cluster.kubectl("get", "djjob", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "SAMPLES-OUT", "RESTARTS", "AGE"]
    assert row.split()[:2] == ["demo", "Succeeded"]
    assert k8s_cluster.kubectl("get", "all", "-n", namespace).stdout.count("datajuicerjob") >= 1

    described = k8s_cluster.kubectl("describe", "djjob", "demo", "-n", namespace).stdout
    for text in ("Conditions:", "Succeeded", "Attempts:", "Events:", "Started", "Created"):
        assert text in described, text

    reasons = [e["reason"] for e in events(k8s_cluster, namespace, "demo")]
    assert sorted(reasons) == ["Created", "Started", "Succeeded"]


def test_runner_killed_twice_and_pod_deleted_resumes_to_identical_output(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    reference: bytes,
    api: client.ApiClient,
) -> None:
    rng = random.Random()
    demo_data(k8s_cluster, namespace)
    job = with_test_ops(example_job())
    # An identity op that takes its time: a kill lands while partitions are being worked on.
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 3}})
    apply(k8s_cluster, namespace, job)
    node = k8s_cluster.node
    for attempt in (1, 2):
        pod = f"demo-runner-{attempt}"
        wait_for(lambda pod=pod: pod_running(k8s_cluster, namespace, pod), 120, f"{pod} running")
        wait_for(
            lambda: WorkDir(work_dir(k8s_cluster, namespace)).plan_path.exists(), 120, "the plan"
        )
        # A random kill instant while this attempt works (Ray start-up, partitions,
        # checkpoints): a deliberate delay, not a synchronisation.
        time.sleep(rng.uniform(0.5, 4.0))
        node.kill_pod_process(namespace, pod, signal.SIGKILL)
    wait_for(lambda: pod_running(k8s_cluster, namespace, "demo-runner-3"), 120, "attempt 3")
    client.CoreV1Api(api).delete_namespaced_pod("demo-runner-3", namespace)

    job = wait_condition(k8s_cluster, namespace, "demo", "Finished", timeout=300)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert output_of(k8s_cluster, namespace) == reference
    assert status["restarts"] == 3
    ends = [(a["index"], a.get("exitCode"), a.get("reason")) for a in status["attempts"]]
    assert ends[:2] == [(1, 137, "Error"), (2, 137, "Error")]
    # The deleted pod's runner got SIGTERM: whatever it exited with (or none, if the pod was
    # gone before the operator saw it end), it is a retryable end, not a verdict.
    assert ends[2][0] == 3 and (ends[2][2] == "PodDeleted" or ends[2][1] not in (0, 1, 2, 3, 4))
    assert ends[3] == (4, 0, "Completed")
    if runner_writes_status():  # the runner reports what it restored: a Resumed Event says it
        resumed = [e for e in events(k8s_cluster, namespace, "demo") if e["reason"] == "Resumed"]
        assert resumed and all("partitions done" in e["message"] for e in resumed)
        assert status["attempts"][-1]["resumedFrom"]["partitionsDone"] >= 0
    retrying = [e for e in events(k8s_cluster, namespace, "demo") if e["reason"] == "Retrying"]
    assert len(retrying) == 3
    assert all(e["type"] == "Warning" for e in retrying)
    assert any("resumes from the checkpoints" in e["message"] for e in retrying)
    assert [p["metadata"]["name"] for p in runner_pods(k8s_cluster, namespace, "demo")] == [
        "demo-runner-1",
        "demo-runner-2",
        "demo-runner-4",
    ]


def test_operator_killed_between_creating_children_and_writing_status(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    reference: bytes,
    tmp_path: Path,
) -> None:
    operator.stop()
    crashing = OperatorProcess(
        k8s_cluster,
        namespace,
        tmp_path / "crashing.log",
        {"DJ_OPERATOR_FAULT": "kill-after-create"},
    ).start()
    demo_data(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, example_job())
    assert crashing.proc is not None
    crashing.proc.wait(120)
    assert crashing.proc.returncode == -signal.SIGKILL, crashing.tail()
    # The pod exists; the status does not know it.
    assert [p["metadata"]["name"] for p in runner_pods(k8s_cluster, namespace, "demo")] == [
        "demo-runner-1"
    ]
    assert not (job_obj(k8s_cluster, namespace, "demo").get("status") or {}).get("attempts")

    restarted = OperatorProcess(k8s_cluster, namespace, tmp_path / "restarted.log").start()
    try:
        job = wait_condition(k8s_cluster, namespace, "demo", "Finished", timeout=240)
    finally:
        assert restarted.stop() == 0
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["restarts"] == 0
    assert [a["index"] for a in job["status"]["attempts"]] == [1]
    assert [p["metadata"]["name"] for p in runner_pods(k8s_cluster, namespace, "demo")] == [
        "demo-runner-1"
    ]
    for kind in ("configmaps", "serviceaccounts", "roles", "rolebindings", "pvc", "netpol"):
        items = get_json(k8s_cluster, namespace, kind, "-l", "datajuicer.io/job=demo")["items"]
        assert len(items) == 1, kind
    assert output_of(k8s_cluster, namespace) == reference


def test_suspend_then_resume_gives_identical_output(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess, reference: bytes
) -> None:
    demo_data(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, example_job())
    wait_for(lambda: pod_running(k8s_cluster, namespace, "demo-runner-1"), 120, "runner running")
    wait_for(lambda: WorkDir(work_dir(k8s_cluster, namespace)).plan_path.exists(), 120, "the plan")
    k8s_cluster.kubectl(
        "patch", "djjob", "demo", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    job = wait_condition(k8s_cluster, namespace, "demo", "Suspended", timeout=120)
    # Suspended only once no runner pod is active; the claim is kept.
    active = [
        p
        for p in runner_pods(k8s_cluster, namespace, "demo")
        if p["status"].get("phase") not in ("Succeeded", "Failed")
    ]
    assert active == []
    assert job["status"]["phase"] in ("Suspended", "Succeeded")
    get_json(k8s_cluster, namespace, "pvc", "demo-data")
    if job["status"]["phase"] == "Suspended":
        assert job["status"]["attempts"][0]["stopReason"] == "Suspended"
        k8s_cluster.kubectl(
            "patch",
            "djjob",
            "demo",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"suspend":false}}',
        )
    job = wait_condition(k8s_cluster, namespace, "demo", "Finished", timeout=240)
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["restarts"] == 0
    assert output_of(k8s_cluster, namespace) == reference
    reasons = [e["reason"] for e in events(k8s_cluster, namespace, "demo")]
    assert "Suspended" in reasons and "Resuming" in reasons


def test_deleting_a_running_job_removes_what_it_owns(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    demo_data(k8s_cluster, namespace)
    kept = example_job()
    owned = example_job()
    owned["metadata"]["name"] = "owned"
    owned["spec"]["storage"]["whenDeleted"] = "Delete"
    apply(k8s_cluster, namespace, kept, owned)
    wait_for(lambda: pod_running(k8s_cluster, namespace, "demo-runner-1"), 120, "runner running")
    operator.stop()  # deletion must not need the operator
    k8s_cluster.kubectl(
        "delete", "djjob", "demo", "owned", "-n", namespace, "--timeout=60s", timeout=90
    )

    def gone() -> bool:
        left = []
        kinds = ("pods", "configmaps", "serviceaccounts", "roles", "rolebindings", "netpol")
        for kind in kinds:
            for job in ("demo", "owned"):
                left += get_json(k8s_cluster, namespace, kind, "-l", f"datajuicer.io/job={job}")[
                    "items"
                ]
        return not left

    wait_for(gone, 120, "the jobs' children garbage-collected")
    claims = {
        c["metadata"]["name"]
        for c in get_json(k8s_cluster, namespace, "pvc")["items"]
        if not c["metadata"].get("deletionTimestamp")
    }
    assert "demo-data" in claims  # Retain
    wait_for(
        lambda: (
            "owned-data"
            not in {c["metadata"]["name"] for c in get_json(k8s_cluster, namespace, "pvc")["items"]}
        ),
        120,
        "the owned claim deleted",
    )
