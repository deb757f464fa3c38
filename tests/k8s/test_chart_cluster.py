"""The Helm chart against the real API server: the rendered manifests are accepted
(`kubectl apply --dry-run=server`, default and non-default values), and the RBAC it grants is
exactly enough, proven with `kubectl auth can-i --as=system:serviceaccount:...`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.harness.cluster import Cluster
from tests.k8s.chartutil import NAMESPACED_FULL, TOP_LEVEL_CRD, find, render

pytestmark = pytest.mark.k8s

# prometheus-operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), taken from its Go
# module as the KubeRay CRDs are: pinned, cached by Go, checked by go.sum's database.
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")


def _go() -> str:
    found = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    assert Path(found).exists(), "the Go toolchain is needed to fetch prometheus-operator's CRDs"
    return found


@pytest.fixture(scope="module")
def monitoring_crds(k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("gomod")
    out = subprocess.run(
        [_go(), "mod", "download", "-json", PROMETHEUS_OPERATOR],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        check=True,
    )
    source = Path(json.loads(out.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    for plural in MONITORING_CRDS:
        k8s_cluster.kubectl(
            "apply", "--server-side", "-f", str(source / f"monitoring.coreos.com_{plural}.yaml")
        )
    for plural in MONITORING_CRDS:
        k8s_cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            f"crd/{plural}.monitoring.coreos.com",
        )
    if TOP_LEVEL_CRD.exists():
        k8s_cluster.kubectl("apply", "--server-side", "-f", str(TOP_LEVEL_CRD))


def _server_dry_run(k8s_cluster: Cluster, manifests: str) -> subprocess.CompletedProcess[str]:
    return k8s_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)


@pytest.mark.usefixtures("monitoring_crds")
def test_default_render_is_accepted_by_the_api_server(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    text, objects = render(tmp_path, namespace=namespace)
    result = _server_dry_run(k8s_cluster, text)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects)


@pytest.mark.usefixtures("monitoring_crds")
def test_non_default_render_is_accepted_by_the_api_server(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    watched = [k8s_cluster.create_namespace("team"), k8s_cluster.create_namespace("team")]
    try:
        values = {**NAMESPACED_FULL, "watch": {"allNamespaces": False, "namespaces": watched}}
        text, objects = render(tmp_path, values, namespace=namespace)
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Role"} <= {
            o["kind"] for o in objects
        }
        result = _server_dry_run(k8s_cluster, text)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("(server dry run)") == len(objects)
    finally:
        for name in watched:
            k8s_cluster.delete_namespace(name)


def _apply_rbac(k8s_cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    docs = [o for o in objects if o["kind"] in kinds]
    k8s_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def _delete(k8s_cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            k8s_cluster.kubectl(
                "delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found"
            )


def can_i(k8s_cluster: Cluster, who: str, verb: str, target: str, *flags: str) -> bool:
    """`kubectl auth can-i --as=WHO VERB TYPE[/NAME] [-n NS | --all-namespaces]
    [--subresource=S]`, sent as the SelfSubjectAccessReview that can-i sends, so that it needs
    no discovery of the resource (the DataJuicerJob CRD need not be installed)."""
    kind, _, name = target.partition("/")
    resource, _, group = kind.partition(".")
    attributes = {"verb": verb, "group": group, "resource": resource}
    if name:
        attributes["name"] = name
    options = list(flags)
    while options:
        flag = options.pop(0)
        if flag == "-n":
            attributes["namespace"] = options.pop(0)
        elif flag.startswith("--subresource="):
            attributes["subresource"] = flag.split("=", 1)[1]
        else:
            assert flag == "--all-namespaces", flag
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    result = k8s_cluster.kubectl(
        "create",
        f"--as={who}",
        "--validate=false",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(review),
        check=False,
    )
    assert result.returncode == 0, f"{review}: {result.stderr}"
    return bool(json.loads(result.stdout)["status"].get("allowed"))


def test_kubectl_auth_can_i_agrees_with_the_review(k8s_cluster: Cluster, namespace: str) -> None:
    """The review above answers as `kubectl auth can-i` does (for a resource it can discover)."""
    who = f"system:serviceaccount:{namespace}:default"
    for verb, target in (("get", "secrets"), ("create", "selfsubjectaccessreviews")):
        cli = k8s_cluster.kubectl(
            "auth", "can-i", f"--as={who}", verb, target, "-n", namespace, check=False
        ).stdout.strip()
        group = ".authorization.k8s.io" if target.startswith("self") else ""
        assert cli == (
            "yes" if can_i(k8s_cluster, who, verb, target + group, "-n", namespace) else "no"
        )


def test_cluster_wide_operator_may_do_what_it_needs_and_nothing_else(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    release = f"rbac-{namespace}"
    _, objects = render(tmp_path, release=release, namespace=namespace)
    _apply_rbac(k8s_cluster, objects)
    try:
        sa = find(objects, "ServiceAccount")[0]["metadata"]["name"]
        operator = f"system:serviceaccount:{namespace}:{sa}"
        other = k8s_cluster.create_namespace("other")
        allowed = [
            ("list", "datajuicerjobs.datajuicer.io", "--all-namespaces"),
            ("watch", "datajuicerjobs.datajuicer.io", "-n", other),
            ("patch", "datajuicerjobs.datajuicer.io", "--subresource=status", "-n", other),
            ("create", "pods", "-n", other),
            ("delete", "pods", "-n", other),
            ("create", "configmaps", "-n", other),
            ("create", "persistentvolumeclaims", "-n", other),
            ("create", "serviceaccounts", "-n", other),
            ("create", "roles.rbac.authorization.k8s.io", "-n", other),
            ("create", "rolebindings.rbac.authorization.k8s.io", "-n", other),
            ("create", "rayclusters.ray.io", "-n", other),
            ("create", "events", "-n", other),
            ("get", "pods", "--subresource=log", "-n", other),
            ("delete", "datajuicerjobs.datajuicer.io", "-n", other),
            ("update", "datajuicerjobs.datajuicer.io", "--subresource=finalizers", "-n", other),
            ("patch", "configmaps", "-n", other),
            ("create", "networkpolicies.networking.k8s.io", "-n", other),
        ]
        denied = [
            ("get", "secrets", "-n", other),
            ("list", "secrets", "--all-namespaces"),
            ("update", "datajuicerjobs.datajuicer.io", "-n", other),
            ("create", "datajuicerjobs.datajuicer.io", "-n", other),
            ("create", "pods", "--subresource=exec", "-n", other),
            ("create", "deployments.apps", "-n", other),
            ("patch", "pods", "-n", other),
            ("escalate", "roles.rbac.authorization.k8s.io", "-n", other),
            ("bind", "roles.rbac.authorization.k8s.io", "-n", other),
            ("impersonate", "serviceaccounts", "-n", other),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
            ("get", "nodes"),
            ("list", "configmaps", "-n", other),
            ("watch", "persistentvolumeclaims", "-n", other),
            ("delete", "networkpolicies.networking.k8s.io", "-n", other),
        ]
        wrong = [a for a in allowed if not can_i(k8s_cluster, operator, *a)]
        wrong += [d for d in denied if can_i(k8s_cluster, operator, *d)]
        assert wrong == [], f"permissions other than the chart promises: {wrong}"
        k8s_cluster.delete_namespace(other)
    finally:
        _delete(k8s_cluster, objects)


def test_namespaced_operator_reaches_only_its_namespaces(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    watched = k8s_cluster.create_namespace("team")
    other = k8s_cluster.create_namespace("other")
    try:
        values = {"watch": {"allNamespaces": False, "namespaces": [watched]}}
        _, objects = render(tmp_path, values, release="scoped", namespace=namespace)
        assert not find(objects, "ClusterRole")
        _apply_rbac(k8s_cluster, objects)
        sa = find(objects, "ServiceAccount")[0]["metadata"]["name"]
        operator = f"system:serviceaccount:{namespace}:{sa}"
        assert can_i(k8s_cluster, operator, "list", "datajuicerjobs.datajuicer.io", "-n", watched)
        assert can_i(k8s_cluster, operator, "create", "pods", "-n", watched)
        assert not can_i(k8s_cluster, operator, "list", "datajuicerjobs.datajuicer.io", "-n", other)
        assert not can_i(k8s_cluster, operator, "create", "pods", "-n", other)
        assert not can_i(
            k8s_cluster, operator, "list", "datajuicerjobs.datajuicer.io", "--all-namespaces"
        )
        assert not can_i(k8s_cluster, operator, "get", "secrets", "-n", watched)
    finally:
        k8s_cluster.delete_namespace(watched)
        k8s_cluster.delete_namespace(other)


def test_operator_can_grant_the_runner_role_but_nothing_more(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """As the operator (chart RBAC only): create a runner's Role and binding; RBAC refuses a Role
    wider than the operator's own. The runner then may patch its own job's status only."""
    release = f"grant-{namespace}"
    _, objects = render(tmp_path, release=release, namespace=namespace)
    _apply_rbac(k8s_cluster, objects)
    try:
        sa = find(objects, "ServiceAccount")[0]["metadata"]["name"]
        operator = f"--as=system:serviceaccount:{namespace}:{sa}"
        # What the operator grants a job's runner: its own builder's objects (without owner
        # references: job-a does not exist).
        from dj_operator.build import children

        job_a = {"metadata": {"name": "job-a", "namespace": namespace, "uid": "0" * 8}}
        runner_sa, runner_role, binding = children.runner_rbac(job_a)
        for obj in (runner_sa, runner_role, binding):
            del obj["metadata"]["ownerReferences"]
        for obj in (runner_sa, runner_role, binding):
            k8s_cluster.kubectl("create", operator, "-f", "-", input=json.dumps(obj))
        greedy = {
            **runner_role,
            "metadata": {"name": "greedy", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        }
        refused = k8s_cluster.kubectl(
            "create", operator, "-f", "-", input=json.dumps(greedy), check=False
        )
        assert refused.returncode != 0
        assert "attempting to grant RBAC permissions not currently held" in refused.stderr

        runner = f"system:serviceaccount:{namespace}:job-a-runner"
        job = ("datajuicerjobs.datajuicer.io", "--subresource=status", "-n", namespace)
        assert can_i(k8s_cluster, runner, "patch", f"{job[0]}/job-a", *job[1:])
        # Patch only: it never reads the job (RBAC cannot narrow the patch to status.progress).
        assert not can_i(k8s_cluster, runner, "get", f"{job[0]}/job-a", *job[1:])
        assert not can_i(k8s_cluster, runner, "patch", f"{job[0]}/job-b", *job[1:])
        assert not can_i(k8s_cluster, runner, "patch", f"{job[0]}/job-a", "-n", namespace)
        assert not can_i(k8s_cluster, runner, "get", "secrets", "-n", namespace)
        assert not can_i(k8s_cluster, runner, "list", "pods", "-n", namespace)
    finally:
        _delete(k8s_cluster, objects)


def test_the_status_guard_lets_a_runner_change_only_progress(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """What RBAC cannot say: the runner's token may patch its job's status, but the chart's
    admission policy refuses any change other than status.progress by a ServiceAccount other
    than the operator's; people and the operator are not constrained."""
    from dj_operator.build import children
    from tests.harness.waiting import wait_for
    from tests.k8s.operator_support import apply, ensure_crd, example_job, job_obj

    ensure_crd(k8s_cluster)
    release = f"guard-{namespace}"
    _, objects = render(tmp_path, release=release, namespace=namespace)
    guard = [o for o in objects if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert len(guard) == 2
    _apply_rbac(k8s_cluster, objects)
    k8s_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(guard))
    try:
        apply(k8s_cluster, namespace, example_job())  # no operator runs: the status is ours
        for obj in children.runner_rbac(job_obj(k8s_cluster, namespace, "demo")):
            k8s_cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))

        def patch(status: dict[str, Any], who: str | None) -> str | None:
            """Merge-patch the status as `who` (a ServiceAccount; None: the admin), as the
            runner's reporter does (a PATCH alone: `kubectl patch` would also need `get`);
            the refusal's message, or None."""
            api = k8s_cluster.api_client()
            if who:
                user = f"system:serviceaccount:{namespace}:{who}"
                api.set_default_header("Impersonate-User", user)
            try:
                client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
                    "datajuicer.io",
                    "v1alpha1",
                    namespace,
                    "datajuicerjobs",
                    "demo",
                    {"status": status},
                )
            except client.ApiException as exc:
                return f"{exc.status} {exc.body}"
            finally:
                api.close()
            return None

        def runner_refused() -> bool:
            assert patch({"phase": "Succeeded"}, None) is None  # a person may
            refused = patch({"phase": "Pending", "attempts": []}, "demo-runner")
            return bool(refused) and "is written by the operator only" in refused

        wait_for(runner_refused, 30, "the status guard in force")
        assert (
            patch({"progress": {"state": "running", "partitionsCompleted": 1}}, "demo-runner")
            is None
        )
        status = job_obj(k8s_cluster, namespace, "demo")["status"]
        assert status["phase"] == "Succeeded"
        assert status["progress"]["partitionsCompleted"] == 1
        operator = find(objects, "ServiceAccount")[0]["metadata"]["name"]
        assert patch({"phase": "Running"}, operator) is None
        assert job_obj(k8s_cluster, namespace, "demo")["status"]["phase"] == "Running"
    finally:
        for obj in guard:
            k8s_cluster.kubectl(
                "delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found"
            )
        _delete(k8s_cluster, objects)
