"""The Helm chart, rendered: `helm lint`, `helm template` with default and non-default values,
what the templates promise (one Recreate replica, probes, restricted security, least-privilege
RBAC, monitoring behind values), and values.schema.json refusing wrong values clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dj_runner import contract
from tests.k8s.chartutil import (
    CHART,
    CHART_CRD,
    NAMESPACED_FULL,
    TOP_LEVEL_CRD,
    find,
    helm,
    only,
    render,
    values_file,
)

FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}
# What the operator never needs: reading credentials or touching workloads it does not own.
FORBIDDEN_RESOURCES = {"secrets", "*", "nodes", "deployments", "daemonsets", "clusterroles"}


def test_chart_crd_is_the_top_level_crd() -> None:
    """crds/ in the chart is a byte-for-byte copy of the project's CRD (or both are absent)."""
    if not TOP_LEVEL_CRD.exists():
        assert not CHART_CRD.exists(), f"{CHART_CRD} exists but {TOP_LEVEL_CRD} does not"
        return
    assert CHART_CRD.exists(), f"copy {TOP_LEVEL_CRD} to {CHART_CRD}"
    assert CHART_CRD.read_bytes() == TOP_LEVEL_CRD.read_bytes(), (
        f"{CHART_CRD} differs from {TOP_LEVEL_CRD}: copy it again"
    )


@pytest.mark.parametrize("values", [None, NAMESPACED_FULL], ids=["default", "namespaced-full"])
def test_helm_lint_is_clean(tmp_path: Path, values: dict[str, Any] | None) -> None:
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["--values", str(values_file(tmp_path, values))]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_render_runs_one_restricted_operator(tmp_path: Path) -> None:
    _, objects = render(tmp_path)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "NetworkPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    deployment = only(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == only(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "datajuicer-operator:0.1.0"
    assert container["command"] == ["dj-operator"]
    assert container["args"] == [
        "run",
        "--all-namespaces",
        "--metrics-port=8080",
        "--liveness-port=8081",
    ]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    assert probe["port"] == "healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    assert pod["volumes"][0]["emptyDir"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DJ_RUNNER_IMAGE"] == env["DJ_RAY_IMAGE"] == "datajuicer-operator:0.1.0"
    runner_pod_sc = json.loads(env["DJ_RUNNER_POD_SECURITY_CONTEXT"])
    assert runner_pod_sc["runAsNonRoot"] is True and runner_pod_sc["runAsUser"] == 10001
    assert json.loads(env["DJ_RUNNER_SECURITY_CONTEXT"])["readOnlyRootFilesystem"] is True
    assert env["DJ_RUNNER_METRICS_PORT"] == "9090"  # what the runners' PodMonitor scrapes
    # The installation policy reaches the operator as its defaults: restricted, no Secret.
    from dj_operator.main import defaults_from_env
    from dj_operator.policy import DEFAULT_POLICY

    assert defaults_from_env(env).policy == DEFAULT_POLICY
    assert defaults_from_env(env).startup_deadline_seconds == 600  # runner.startupDeadlineSeconds
    service = only(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()


def test_policy_values_reach_the_operator(tmp_path: Path) -> None:
    """Every policy value of the chart becomes the operator setting it documents."""
    from dj_operator.main import defaults_from_env
    from dj_operator.policy import Policy

    peers = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    values = {
        "policy": {
            "allowPrivileged": True,
            "allowPrivilegeEscalation": True,
            "allowHostPath": True,
            "allowRoot": True,
            "allowedCapabilities": ["NET_BIND_SERVICE", "SYS_TIME"],
            "allowedSecrets": ["db-password", "tls"],
            "allowedServiceAccounts": ["s3-reader"],
            "allowedImagePrefixes": ["registry.example.org/dj/", "busybox:"],
            "allowPathsOutsideMount": True,
        },
        "jobNetworkPolicy": {"enabled": False, "metricsFrom": peers},
    }
    _, objects = render(tmp_path, values)
    container = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert defaults_from_env(env).policy == Policy(
        allow_privileged=True,
        allow_privilege_escalation=True,
        allow_host_path=True,
        allow_root=True,
        allowed_capabilities=frozenset({"NET_BIND_SERVICE", "SYS_TIME"}),
        allowed_secrets=frozenset({"db-password", "tls"}),
        allowed_service_accounts=frozenset({"s3-reader"}),
        allowed_image_prefixes=("registry.example.org/dj/", "busybox:"),
        allow_paths_outside_mount=True,
        network_policy=False,
        metrics_from=tuple(peers),
    )


def test_the_status_guard_covers_every_status_field_but_progress(tmp_path: Path) -> None:
    """The admission policy lets a runner change status.progress only: one validation per
    operator-owned status field of the CRD, and the operator's own ServiceAccount exempt."""
    import re

    from dj_operator.api.crd import status_schema

    _, objects = render(tmp_path)
    policy = only(objects, "ValidatingAdmissionPolicy")
    guarded = {
        re.search(r"has\(object\.status\.(\w+)\)", v["expression"]).group(1)  # type: ignore[union-attr]
        for v in policy["spec"]["validations"]
    }
    assert guarded == set(status_schema()["properties"]) - {"progress"}
    (condition,) = policy["spec"]["matchConditions"]
    assert "system:serviceaccount:dj-system:dj-datajuicer-operator" in condition["expression"]
    binding = only(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # every namespace, like the ClusterRole
    _, scoped = render(tmp_path, NAMESPACED_FULL)
    selector = only(scoped, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]
    assert selector["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    _, off = render(tmp_path, {"statusGuard": {"enabled": False}})
    assert not find(off, "ValidatingAdmissionPolicy")


def _assert_least_privilege(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        assert not FORBIDDEN_VERBS & set(rule["verbs"]), rule
        assert not FORBIDDEN_RESOURCES & set(rule["resources"]), rule
        assert "*" not in rule["apiGroups"], rule


def test_default_rbac_is_least_privilege(tmp_path: Path) -> None:
    _, objects = render(tmp_path)
    role = only(objects, "ClusterRole")
    _assert_least_privilege(role["rules"])
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    # The runner's Role (patch of its job's status) can be granted only by one who holds it.
    assert {"patch"} <= granted[(contract.GROUP, f"{contract.PLURAL}/status")]
    assert granted[(contract.GROUP, contract.PLURAL)] == {
        "get",
        "list",
        "watch",
        "patch",
        "delete",
    }
    # Owner references with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
    assert granted[("datajuicer.io", "datajuicerjobs/finalizers")] == {"update"}
    # Read by name, never listed or watched; the recipe ConfigMap is patched after a change
    # while suspended.
    assert granted[("", "configmaps")] == {"get", "create", "patch"}
    assert granted[("", "persistentvolumeclaims")] == {"get", "create"}
    assert granted[("networking.k8s.io", "networkpolicies")] == {"get", "create"}
    assert granted[("", "serviceaccounts")] == {"get", "create"}
    assert ("", "secrets") not in granted
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "dj-datajuicer-operator", "namespace": "dj-system"}
    ]


def test_namespaced_render_grants_nothing_cluster_wide(tmp_path: Path) -> None:
    _, objects = render(tmp_path, NAMESPACED_FULL)
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    roles = find(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        _assert_least_privilege(role["rules"])
    bindings = find(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    container = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.org/dj/datajuicer-operator:1.2.3"
    assert container["args"] == [
        "run",
        "--namespace=team-a",
        "--namespace=team-b",
        "--metrics-port=9100",
        "--liveness-port=9101",
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DJ_RUNNER_IMAGE"] == "example.org/dj/runner:9.9"
    assert env["DJ_RAY_IMAGE"] == "example.org/dj/datajuicer-operator:1.2.3"


def test_monitoring_parts_render_behind_values(tmp_path: Path) -> None:
    _, objects = render(tmp_path, NAMESPACED_FULL)
    monitor = only(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    pod_monitor = only(objects, "PodMonitor")
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    # It selects the runner pods the operator builds, on the port they declare.
    from dj_operator.api.types import parse_spec
    from dj_operator.build import children
    from tests.k8s.operator_support import example_job

    job = example_job()
    job["metadata"].update(namespace="team-a", uid="0123456789abcdef")
    job["spec"]["runner"]["metricsPort"] = 9090
    runner = children.runner_pod(job, parse_spec(job["spec"]), 1, "/data/w")
    selector = pod_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= runner["metadata"]["labels"].items(), (selector, runner)
    assert selector == {
        contract.LABEL_COMPONENT: contract.COMPONENT_RUNNER,
        contract.LABEL_MANAGED_BY: contract.OPERATOR_NAME,
    }
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] == contract.METRICS_PORT_NAME
    assert endpoint["port"] in {p["name"] for p in runner["spec"]["containers"][0]["ports"]}
    rule = only(objects, "PrometheusRule")
    alerts = CHART / "rules" / "alerts.yaml"
    if alerts.exists():
        import yaml

        assert rule["spec"]["groups"] == yaml.safe_load(alerts.read_text())["groups"]
    else:
        assert rule["spec"]["groups"] == []
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    maps = [c for c in find(objects, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]
    assert len(maps) == len(dashboards)
    for config_map, path in zip(
        sorted(maps, key=lambda c: c["metadata"]["name"]), dashboards, strict=True
    ):
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())


def test_notes_say_what_to_apply_next(tmp_path: Path) -> None:
    result = helm("install", "dj", str(CHART), "--dry-run=client", "--namespace", "dj-system")
    assert result.returncode == 0, result.stderr
    assert "kubectl apply -f examples/job.yaml" in result.stdout
    assert "does not upgrade the CRD" in result.stdout


BAD_VALUES = [
    # (values, the path named in the error, what the error says would be valid)
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "one of 'Always'"),
    ({"operator": {"metricsPort": 70000}}, "/operator/metricsPort", "want 65,535"),
    (
        {"watch": {"allNamespaces": False, "namespaces": ["Team_A"]}},
        "/watch/namespaces/0",
        "'Team_A' does not match pattern '^[a-z0-9]",
    ),
    ({"replicaCount": 3}, "additional properties 'replicaCount'", "not allowed"),
    (
        {"metrics": {"serviceMonitor": {"interval": "often"}}},
        "/metrics/serviceMonitor/interval",
        "does not match pattern '^([0-9]+(ms|s|m|h))+$'",
    ),
    (
        {"runner": {"podSecurityContext": {"runAsUser": 0}}},
        "/runner/podSecurityContext/runAsUser",
        "minimum: got 0, want 1",
    ),
    (
        {"operator": {"securityContext": {"privileged": True}}},
        "/operator/securityContext/privileged",
        "value must be false",
    ),
    ({"image": {"tag": "latest; rm -rf /"}}, "/image/tag", "does not match pattern"),
    (
        {"operator": {"resources": {"limits": {"memory": "lots"}}}},
        "/operator/resources/limits/memory",
        "'lots' does not match pattern",
    ),
    ({"watch": {"allNamespaces": True, "namespaces": ["a"]}}, "watch.allNamespaces", "not both"),
    ({"watch": {"allNamespaces": False, "namespaces": []}}, "watch.namespaces", "at least one"),
    ({"policy": {"allowRoot": "yes"}}, "/policy/allowRoot", "want boolean"),
    (
        {"policy": {"allowedSecrets": ["Bad_Name"]}},
        "/policy/allowedSecrets/0",
        "'Bad_Name' does not match pattern",
    ),
    ({"policy": {"allowAnything": True}}, "additional properties 'allowAnything'", "not allowed"),
]


@pytest.mark.parametrize(
    ("values", "names", "explains"), BAD_VALUES, ids=[str(v[0]) for v in BAD_VALUES]
)
def test_wrong_values_are_refused_clearly(
    tmp_path: Path, values: dict[str, Any], names: str, explains: str
) -> None:
    result = helm("template", "dj", str(CHART), "--values", str(values_file(tmp_path, values)))
    assert result.returncode != 0, f"accepted {values}"
    assert names in result.stderr, result.stderr
    assert explains in result.stderr, result.stderr
