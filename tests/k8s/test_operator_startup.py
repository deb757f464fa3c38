"""No failure is silent, on the real control plane: a create the API server refuses (422: an
invalid pod; 403: a quota) and runner pods that cannot start (a missing Secret key, no node that
fits) show in the job's status and Events within 30 s, and the startup deadline ends a job whose
runner never starts. And recipeFrom is read once: an edit or a deletion of its ConfigMap mid-run
changes nothing of the running job nor of its next attempt.

Not reproduced here: ImagePullBackOff (the process node runs no images; the reading of it is
unit-tested with the pod status the kubelet writes) and blocked Ray pods (unit-tested with the
same pod statuses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from dj_operator.handlers.reconcile import reconcile
from dj_operator.kube import Kube
from dj_operator.metrics import default_metrics
from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.operator_support import (
    OperatorProcess,
    apply,
    condition,
    crd,
    data_config_map,
    demo_data,
    events,
    example_job,
    job_obj,
    numbered_rows,
    operator,
    runner_pods,
    wait_condition,
    wait_phase,
    with_test_ops,
)

pytestmark = pytest.mark.k8s
__all__ = ["crd", "operator"]
Obj = dict[str, Any]

#: What the issue promises: a pod that does not start says why within this long.
WITHIN_S = 30


def blocked(cluster: Cluster, namespace: str, reason: str) -> Obj | None:
    job = job_obj(cluster, namespace, "demo")
    cond = condition(job, "Blocked")
    return job if cond.get("status") == "True" and cond.get("reason") == reason else None


def warnings(cluster: Cluster, namespace: str) -> dict[str, Obj]:
    return {e["reason"]: e for e in events(cluster, namespace, "demo") if e["type"] == "Warning"}


def test_an_invalid_pod_fails_the_job_with_the_api_servers_message(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """A mount of a volume the pod does not have: the API server answers 422, the job fails."""
    demo_data(k8s_cluster, namespace)
    job = example_job()
    job["spec"]["runner"]["volumeMounts"] = [{"name": "no-such-volume", "mountPath": "/extra"}]
    apply(k8s_cluster, namespace, job)
    failed = wait_condition(k8s_cluster, namespace, "demo", "Failed", timeout=WITHIN_S)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "PodCreateFailed"
    assert failure["component"] == "operator"
    assert "(422)" in failure["message"] and "no-such-volume" in failure["message"]
    assert runner_pods(k8s_cluster, namespace, "demo") == []
    assert "no-such-volume" in warnings(k8s_cluster, namespace)["PodCreateFailed"]["message"]


def test_a_refused_create_counts_as_a_reconcile_error(
    k8s_cluster: Cluster, namespace: str, crd: None, api: client.ApiClient
) -> None:
    """The reconcile (in this process, against the real API server) handles the 422 itself:
    it still counts in the reconcile-error metric the alert reads."""
    job = example_job()
    job["spec"]["runner"]["volumeMounts"] = [{"name": "no-such-volume", "mountPath": "/extra"}]
    apply(k8s_cluster, namespace, job)
    registry = default_metrics().registry

    def errors() -> float:
        name = "datajuicer_operator_reconcile_errors_total"
        return registry.get_sample_value(name, {"handler": "reconcile"}) or 0.0

    before = errors()
    assert reconcile(Kube(api), namespace, "demo").phase == "Failed"
    assert errors() == before + 1
    assert reconcile(Kube(api), namespace, "demo").phase == "Failed"  # finished: not tried again
    assert errors() == before + 1


def test_a_quota_refusal_blocks_backs_off_and_clears_when_the_quota_allows(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }
    apply(k8s_cluster, namespace, quota)
    wait_for(lambda: job_quota_ready(k8s_cluster, namespace), timeout=60, what="the quota's status")
    demo_data(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, example_job())
    job = wait_for(
        lambda: blocked(k8s_cluster, namespace, "CreateForbidden"),
        timeout=WITHIN_S,
        what="Blocked CreateForbidden",
    )
    assert job["status"]["phase"] == "Pending"
    message = condition(job, "Blocked")["message"]
    assert "(403)" in message and "no-pods" in message, message
    assert job["status"]["createBackoff"]["refusals"] >= 1
    assert "no-pods" in warnings(k8s_cluster, namespace)["CreateForbidden"]["message"]
    # Backed off: not one refusal per resync pass (every 5 s) but 10 s, 20 s, ... apart.
    k8s_cluster.kubectl("delete", "resourcequota", "no-pods", "-n", namespace)
    done = wait_condition(k8s_cluster, namespace, "demo", "Succeeded", timeout=240)
    assert condition(done, "Blocked")["status"] == "False"
    assert "createBackoff" not in done["status"]
    assert [a["index"] for a in done["status"]["attempts"]] == [1]


def job_quota_ready(cluster: Cluster, namespace: str) -> bool:
    out = cluster.kubectl(
        "get", "resourcequota", "no-pods", "-n", namespace, "-o", "jsonpath={.status.hard.pods}"
    )
    return out.stdout.strip() == "0"


def test_a_missing_secret_key_says_why_within_30_s(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    demo_data(k8s_cluster, namespace)
    job = example_job()
    job["spec"]["runner"]["env"].append(
        {
            "name": "TOKEN",
            "valueFrom": {"configMapKeyRef": {"name": "demo-data", "key": "no-such-key"}},
        }
    )
    apply(k8s_cluster, namespace, job)
    job = wait_for(
        lambda: blocked(k8s_cluster, namespace, "CreateContainerConfigError"),
        timeout=WITHIN_S,
        what="Blocked CreateContainerConfigError",
    )
    assert job["status"]["phase"] == "Starting"
    assert "no-such-key" in condition(job, "Blocked")["message"]
    assert "no-such-key" in warnings(k8s_cluster, namespace)["PodBlocked"]["message"]


def test_an_unschedulable_runner_says_why_then_fails_at_the_startup_deadline(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    demo_data(k8s_cluster, namespace)
    job = example_job()
    job["spec"]["runner"]["nodeSelector"] = {"disk": "nowhere"}
    job["spec"]["startupDeadlineSeconds"] = 15
    apply(k8s_cluster, namespace, job)
    seen = wait_for(
        lambda: blocked(k8s_cluster, namespace, "Unschedulable"),
        timeout=WITHIN_S,
        what="Blocked Unschedulable",
    )
    # kube-scheduler's own words: "0/1 nodes are available: 1 node(s) didn't match Pod's node
    # affinity/selector. ..."
    assert "node affinity/selector" in condition(seen, "Blocked")["message"]
    failed = wait_condition(k8s_cluster, namespace, "demo", "Failed", timeout=60)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "StartupDeadlineExceeded"
    assert "startupDeadlineSeconds (15 s)" in failure["message"]
    assert "node affinity/selector" in failure["message"]
    wait_for(
        lambda: runner_pods(k8s_cluster, namespace, "demo") == [],
        timeout=60,
        what="the stuck runner pod deleted",
    )


def test_recipe_from_is_read_once_an_edit_mid_run_reaches_no_attempt(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    apply(
        k8s_cluster,
        namespace,
        data_config_map("demo-data", {"demo.jsonl": numbered_rows(20, "HOLD", at=[19])}),
    )
    gate = tmp_path / "gate"
    gate.mkdir()
    job = with_test_ops(example_job())
    recipe = job["spec"].pop("recipe")
    recipe["partition_size"] = 10
    recipe["process"] = [{"gate_mapper": {"marker": "HOLD", "state_dir": str(gate)}}]

    def source(of: Obj) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "my-recipe"},
            "data": {"recipe.yaml": yaml.safe_dump(of)},
        }

    job["spec"]["recipeFrom"] = {"configMapKeyRef": {"name": "my-recipe"}}
    apply(k8s_cluster, namespace, source(recipe), job)
    running = wait_phase(k8s_cluster, namespace, "demo", ("Running",), timeout=120)
    started_with = running["status"]["recipeHash"]
    assert started_with.startswith("sha256:")
    # Edited mid-run (another partitioning: the work dir would refuse it), then the runner lost.
    apply(k8s_cluster, namespace, source({**recipe, "partition_size": 5}))
    k8s_cluster.kubectl("delete", "pod", "demo-runner-1", "-n", namespace, "--wait=false")
    wait_for(
        lambda: any(
            p["metadata"]["name"] == "demo-runner-2" and p["status"].get("phase") == "Running"
            for p in runner_pods(k8s_cluster, namespace, "demo")
        ),
        timeout=120,
        what="attempt 2 running",
    )
    # Its source deleted: the job neither goes back to Pending nor reads anything new.
    k8s_cluster.kubectl("delete", "configmap", "my-recipe", "-n", namespace)
    copy = k8s_cluster.kubectl(
        "get", "configmap", "demo-recipe", "-n", namespace, "-o", "jsonpath={.data.recipe\\.yaml}"
    ).stdout
    assert yaml.safe_load(copy)["partition_size"] == 10
    (gate / "open").touch()
    done = wait_condition(k8s_cluster, namespace, "demo", "Succeeded", timeout=180)
    assert done["status"]["recipeHash"] == started_with
    # Attempt 2 ran the recipe it started with (an edited one would be ResumeRefused), and the
    # deleted source did not hold its success back (a Pending job would never be Succeeded).
    assert [a["index"] for a in done["status"]["attempts"]] == [1, 2]
