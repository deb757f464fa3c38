"""The operator under the chart's own RBAC, never as the cluster admin: its ServiceAccount's
token, bound to the Role the chart renders for a watched namespace. A job runs with every child
created (NetworkPolicy included) in a namespace that enforces Pod Security Admission
`restricted`, and a recipe changed while the job was suspended reaches the next attempt (the
operator patches the recipe ConfigMap, which the chart once did not allow)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.chartutil import find, render
from tests.k8s.operator_support import (
    OperatorProcess,
    apply,
    demo_data,
    ensure_crd,
    example_job,
    get_json,
    runner_pods,
    runner_writes_status,
    wait_condition,
    with_test_ops,
)

pytestmark = pytest.mark.k8s
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding"}


def chart_kubeconfig(cluster: Cluster, namespace: str, directory: Path) -> Path:
    """A kubeconfig of the chart's operator ServiceAccount (namespaced mode, watching and
    installed in `namespace`): the admin's file with the ServiceAccount's token as its user."""
    _, objects = render(
        directory,
        {"watch": {"allNamespaces": False, "namespaces": [namespace]}},
        release="rbac",
        namespace=namespace,
    )
    rbac = [o for o in objects if o["kind"] in RBAC_KINDS]
    assert {o["kind"] for o in rbac} == RBAC_KINDS
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(rbac))
    sa = find(objects, "ServiceAccount")[0]["metadata"]["name"]
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=2h").stdout
    config = json.loads(cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token.strip()}
    path = directory / "operator-kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def chart_operator(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    ensure_crd(k8s_cluster)
    kubeconfig = chart_kubeconfig(k8s_cluster, namespace, tmp_path)
    op = OperatorProcess(
        k8s_cluster, namespace, tmp_path / "operator.log", env={"KUBECONFIG": str(kubeconfig)}
    ).start()
    yield op
    if op.proc is not None and op.proc.poll() is None:
        assert op.stop() == 0, op.tail()


def _patch(cluster: Cluster, namespace: str, body: dict) -> None:
    cluster.kubectl(
        "patch", "djjob", "demo", "-n", namespace, "--type=merge", "-p", json.dumps(body)
    )


def test_a_job_runs_and_takes_a_recipe_changed_while_suspended_under_the_charts_rbac(
    k8s_cluster: Cluster, namespace: str, chart_operator: OperatorProcess
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

    wait_for(recipe_updated, 120, f"the recipe ConfigMap patched\n{chart_operator.tail()}")
    job = wait_condition(k8s_cluster, namespace, "demo", "Finished", timeout=240)
    status = job["status"]
    assert status["phase"] == "Succeeded", status.get("failure")
    assert [a["podName"] for a in status["attempts"]] == ["demo-runner-1", "demo-runner-2"]
    assert status["children"]["networkPolicy"] == "demo-ingress"
    if runner_writes_status():  # the runner's reporter, under its patch-only Role
        assert status["progress"]["podName"] == "demo-runner-2"
        assert status["progress"]["partitionsCompleted"] == status["progress"]["partitionsTotal"]
    forbidden = [line for line in chart_operator.tail(400).splitlines() if "Forbidden" in line]
    assert forbidden == []
