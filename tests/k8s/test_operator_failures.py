"""Each failure class on the real control plane: what only the pod can see (exit 2), a refused
resume (exit 4), partial success (exit 3), crashes beyond backoffLimit, deadlines, a stall."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from dj_runner.store.workdir import WorkDir
from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.operator_support import (
    OperatorProcess,
    apply,
    condition,
    data_config_map,
    demo_data,
    events,
    example_job,
    numbered_rows,
    operator,
    runner_pods,
    wait_condition,
    wait_phase,
    with_test_ops,
)

pytestmark = pytest.mark.k8s
__all__ = ["operator"]
Obj = dict[str, Any]


def active_pods(cluster: Cluster, namespace: str, job: str) -> list[Obj]:
    return [
        p
        for p in runner_pods(cluster, namespace, job)
        if p["status"].get("phase") not in ("Succeeded", "Failed")
    ]


def test_missing_dataset_is_a_terminal_failure_with_the_runners_message(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    job = example_job()
    job["spec"]["runner"] = {}  # no staging: input/demo.jsonl does not exist on the claim
    apply(k8s_cluster, namespace, job)
    failed = wait_condition(k8s_cluster, namespace, "demo", "Failed", timeout=120)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "InvalidInput"
    assert failure["component"] == "runner"
    assert failure["exitCode"] == 2
    assert "input/demo.jsonl" in failure["message"]
    assert "input/demo.jsonl" in failure["logTail"]
    assert [a["index"] for a in failed["status"]["attempts"]] == [1]  # not retried
    assert failed["status"]["restarts"] == 0
    warnings = [
        e["reason"] for e in events(k8s_cluster, namespace, "demo") if e["type"] == "Warning"
    ]
    assert warnings == ["InvalidInput"]


def test_partial_success(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    data = numbered_rows(40, "FAIL-ME", at=[25])  # its partition fails
    apply(k8s_cluster, namespace, data_config_map("demo-data", {"demo.jsonl": data}))
    job = example_job()
    recipe = job["spec"]["recipe"]
    recipe.update(partition_size=10, max_retries=0, retry_base_delay_s=0, max_failed_partitions=1)
    state = tmp_path / "flaky"
    state.mkdir()
    recipe["process"] = [{"flaky_mapper": {"marker": "FAIL-ME", "state_dir": str(state)}}]
    apply(k8s_cluster, namespace, with_test_ops(job))
    done = wait_condition(k8s_cluster, namespace, "demo", "Finished", timeout=180)
    status = done["status"]
    assert status["phase"] == "PartiallySucceeded", status
    assert status["failure"]["exitCode"] == 3
    assert "FAIL-ME" in status["failure"]["message"] or "FAIL-ME" in status["failure"]["logTail"]
    assert condition(done, "Succeeded")["status"] == "False"
    assert condition(done, "Failed")["status"] == "False"
    assert [a["index"] for a in status["attempts"]] == [1]
    out = k8s_cluster.node.pvc_dir(namespace, "demo-data") / "output" / "result.jsonl"
    assert len(out.read_text().splitlines()) == 30  # three of four partitions


def test_a_resume_refused_after_a_recipe_change_is_terminal(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    demo_data(k8s_cluster, namespace)
    job = example_job()
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 0.5}})
    apply(k8s_cluster, namespace, with_test_ops(job))
    work = k8s_cluster.node.pvc_dir(namespace, "demo-data") / ".datajuicer" / namespace / "demo"
    wait_for(lambda: WorkDir(work).manifest_path.exists(), 120, "the runner claimed its work dir")
    k8s_cluster.kubectl(
        "patch", "djjob", "demo", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    wait_condition(k8s_cluster, namespace, "demo", "Suspended", timeout=120)
    changed = {"spec": {"suspend": False, "recipe": {"partition_size": 20}}}
    k8s_cluster.kubectl(
        "patch", "djjob", "demo", "-n", namespace, "--type=merge", "-p", json.dumps(changed)
    )
    failed = wait_condition(k8s_cluster, namespace, "demo", "Failed", timeout=120)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "ResumeRefused"
    assert failure["exitCode"] == 4
    assert failed["status"]["restarts"] == 0
    assert len(failed["status"]["attempts"]) == 2


def test_crashes_beyond_backoff_limit_fail_the_job(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    demo_data(k8s_cluster, namespace)
    job = example_job()
    job["spec"]["backoffLimit"] = 1
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 0.5}})
    apply(k8s_cluster, namespace, with_test_ops(job))
    node = k8s_cluster.node
    for attempt in (1, 2):
        pod = f"demo-runner-{attempt}"
        wait_for(lambda pod=pod: node.pod_pid(namespace, pod), 120, f"{pod} process")
        node.kill_pod_process(namespace, pod, signal.SIGKILL)
    failed = wait_condition(k8s_cluster, namespace, "demo", "Failed", timeout=120)
    status = failed["status"]
    assert status["failure"]["reason"] == "BackoffLimitExceeded"
    assert status["failure"]["exitCode"] == 137
    assert "backoffLimit is 1" in status["failure"]["message"]
    assert status["restarts"] == 1
    assert [p["metadata"]["name"] for p in runner_pods(k8s_cluster, namespace, "demo")] == [
        "demo-runner-1",
        "demo-runner-2",
    ]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("activeDeadlineSeconds", 5, "DeadlineExceeded"), ("progressDeadlineSeconds", 10, "Stalled")],
)
def test_deadlines_fail_the_job_and_stop_its_pods(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    field: str,
    value: int,
    reason: str,
) -> None:
    demo_data(k8s_cluster, namespace)
    job = example_job()
    job["spec"][field] = value
    # Slow enough that no checkpoint is committed within the deadline.
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 30}})
    apply(k8s_cluster, namespace, with_test_ops(job))
    failed = wait_condition(k8s_cluster, namespace, "demo", "Failed", timeout=120)
    assert failed["status"]["failure"]["reason"] == reason
    assert condition(failed, "Running")["status"] == "False"
    wait_for(lambda: not active_pods(k8s_cluster, namespace, "demo"), 60, "the runner stopped")
    final = wait_phase(k8s_cluster, namespace, "demo", ("Failed",))
    assert final["status"]["restarts"] == 0
    assert final["status"]["attempts"][0]["stopReason"] == reason
