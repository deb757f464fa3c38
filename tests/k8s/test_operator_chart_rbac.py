"""The operator under the chart's own RBAC, never as the cluster admin: its ServiceAccount's
token, bound to the Role the chart renders for a watched namespace (as every test's operator
runs, tests/k8s/operator_identity.py; the running process, restarted too, is that ServiceAccount
and may not list Secrets cluster-wide). A job runs with every child
created (NetworkPolicy included) in a namespace that enforces Pod Security Admission
`restricted`, and a recipe changed while the job was suspended reaches the next attempt (the
operator patches the recipe ConfigMap, which the chart once did not allow)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from tests.harness import proctree
from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.operator_identity import RELEASE, kubectl_as, username
from tests.k8s.operator_support import (
    RBAC_DENIAL,
    OperatorProcess,
    apply,
    demo_data,
    example_job,
    get_json,
    operator,
    runner_pods,
    runner_writes_status,
    wait_condition,
    with_test_ops,
)

pytestmark = pytest.mark.k8s
__all__ = ["operator"]
SECRETS_ANYWHERE = ("auth", "can-i", "list", "secrets", "--all-namespaces")


def operator_identity(cluster: Cluster, op: OperatorProcess) -> tuple[str, str]:
    """Who the running operator process is to the API server (by the kubeconfig in its
    environment), and whether it may list Secrets in every namespace."""
    assert op.proc is not None
    kubeconfig = Path(proctree.environ(op.proc.pid)["KUBECONFIG"])
    secrets = kubectl_as(cluster, kubeconfig, *SECRETS_ANYWHERE)
    return username(cluster, kubeconfig), secrets.stdout.strip()


def test_the_operator_process_is_the_charts_service_account_also_after_a_restart(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    expected = (f"system:serviceaccount:{namespace}:{RELEASE}-datajuicer-operator", "no")
    assert operator_identity(k8s_cluster, operator) == expected
    assert operator.proc is not None
    os.killpg(operator.proc.pid, signal.SIGKILL)
    operator.proc.wait(10)
    operator.start()
    assert operator_identity(k8s_cluster, operator) == expected
    # The admin, for contrast: the same question answered yes.
    assert k8s_cluster.kubectl(*SECRETS_ANYWHERE).stdout.strip() == "yes"
    # What OperatorProcess.stop() looks for in the operator's log is the server's refusal.
    assert operator.kubeconfig is not None
    refused = kubectl_as(k8s_cluster, operator.kubeconfig, "get", "secrets", "-A")
    assert refused.returncode != 0 and RBAC_DENIAL.search(refused.stderr), refused.stderr


def _patch(cluster: Cluster, namespace: str, body: dict) -> None:
    cluster.kubectl(
        "patch", "djjob", "demo", "-n", namespace, "--type=merge", "-p", json.dumps(body)
    )


def test_a_job_runs_and_takes_a_recipe_changed_while_suspended_under_the_charts_rbac(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    k8s_cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    demo_data(k8s_cluster, namespace)
    job = with_test_ops(example_job())
    # Slow enough to be suspended while it runs.
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 3}})
    apply(k8s_cluster, namespace, job)
    wait_for(
        lambda: runner_pods(k8s_cluster, namespace, "demo"), 120, "runner pod 1 (PSA restricted)"
    )
    for kind, name in (
        ("configmap", "demo-recipe"),
        ("serviceaccount", "demo-runner"),
        ("role", "demo-runner"),
        ("rolebinding", "demo-runner"),
        ("networkpolicy", "demo-ingress"),
        ("pvc", "demo-data"),
    ):
        get_json(k8s_cluster, namespace, kind, name)

    _patch(k8s_cluster, namespace, {"spec": {"suspend": True}})
    wait_condition(k8s_cluster, namespace, "demo", "Suspended", timeout=120)
    recipe = {**job["spec"]["recipe"], "project_name": "demo-edited"}
    _patch(k8s_cluster, namespace, {"spec": {"recipe": recipe}})
    _patch(k8s_cluster, namespace, {"spec": {"suspend": False}})

    def recipe_updated() -> bool:
        data = get_json(k8s_cluster, namespace, "configmap", "demo-recipe")["data"]
        return yaml.safe_load(data["recipe.yaml"])["project_name"] == "demo-edited"

    wait_for(recipe_updated, 120, f"the recipe ConfigMap patched\n{operator.tail()}")
    job = wait_condition(k8s_cluster, namespace, "demo", "Finished", timeout=240)
    status = job["status"]
    assert status["phase"] == "Succeeded", status.get("failure")
    assert [a["podName"] for a in status["attempts"]] == ["demo-runner-1", "demo-runner-2"]
    assert status["children"]["networkPolicy"] == "demo-ingress"
    if runner_writes_status():  # the runner's reporter, under its patch-only Role
        assert status["progress"]["podName"] == "demo-runner-2"
        assert status["progress"]["partitionsCompleted"] == status["progress"]["partitionsTotal"]
    forbidden = [line for line in operator.tail(400).splitlines() if "Forbidden" in line]
    assert forbidden == []
