"""Invalid manifests: refused by `kubectl apply` with the field named (schema and CEL rules), or
failed at once by the operator with the runner's own message or the installation policy's rule;
never a pod."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.cluster import Cluster
from tests.k8s.operator_support import (
    OperatorProcess,
    apply,
    condition,
    crd,
    events,
    example_job,
    job_obj,
    operator,
    runner_pods,
    wait_phase,
)

pytestmark = pytest.mark.k8s
__all__ = ["crd", "operator"]
Obj = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def edit(job: Obj) -> None:
        node = job["spec"]
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value

    return edit


ONE_RECIPE = "exactly one of spec.recipe, spec.recipeYAML and spec.recipeFrom"
REFUSED = [
    (
        "recipe-and-recipeFrom",
        _set("recipeFrom", {"configMapKeyRef": {"name": "r"}}),
        ONE_RECIPE,
    ),
    ("recipe-and-recipeYAML", _set("recipeYAML", "process: []\n"), ONE_RECIPE),
    ("no-recipe", _set("recipe", None), ONE_RECIPE),
    (
        "claim-and-template",
        _set("storage.claimName", "x"),
        "set exactly one of claimName, volumeClaimTemplate and objectStore",
    ),
    (
        "template-and-object-store",
        _set("storage.objectStore", {"workDir": "s3://bucket/work"}),
        "set exactly one of claimName, volumeClaimTemplate and objectStore",
    ),
    (
        "object-store-without-work-dir",
        _set("storage", {"objectStore": {"region": "us-east-1"}}),
        "spec.storage.objectStore.workDir: Required value",
    ),
    (
        "object-store-work-dir-not-a-uri",
        _set("storage", {"objectStore": {"workDir": "/data/work"}}),
        "spec.storage.objectStore.workDir: Invalid value",
    ),
    (
        "object-store-and-claim-work-dir",
        _set("storage", {"objectStore": {"workDir": "s3://bucket/work"}, "workDir": "runs"}),
        "workDir is only valid with a claim: set objectStore.workDir",
    ),
    (
        "object-store-two-credentials",
        _set(
            "storage",
            {
                "objectStore": {
                    "workDir": "s3://bucket/work",
                    "credentialsSecret": {"name": "keys"},
                    "webIdentity": {"serviceAccountName": "reader"},
                }
            },
        ),
        "set at most one of credentialsSecret and webIdentity",
    ),
    ("no-storage", _set("storage", None), "spec.storage: Required value"),
    ("unknown-mode", _set("ray.mode", "slurm"), "spec.ray.mode: Unsupported value"),
    (
        "workers-in-local",
        _set("ray.workerGroups", [{"name": "w"}]),
        "workerGroups is only valid in kuberay mode",
    ),
    (
        "address-in-local",
        _set("ray.address", "ray://x:10001"),
        "address is required in external mode and only valid there",
    ),
    (
        "external-without-address",
        _set("ray.mode", "external"),
        "address is required in external mode",
    ),
    (
        "port-in-worker-range",
        _set("ray.headGroup", {"ports": {"client": 10005}}),
        "spec.ray.headGroup.ports.client",
    ),
    ("negative-backoff", _set("backoffLimit", -1), "spec.backoffLimit: Invalid value"),
    ("huge-backoff", _set("backoffLimit", 1000), "spec.backoffLimit: Invalid value"),
    ("relative-mount", _set("storage.mountPath", "data"), "spec.storage.mountPath"),
    (
        "unknown-when-deleted",
        _set("storage.whenDeleted", "Keep"),
        "spec.storage.whenDeleted: Unsupported value",
    ),
    ("unknown-field", _set("retries", 3), 'unknown field "spec.retries"'),
    (
        "replicas-above-max",
        lambda j: j["spec"].update(
            ray={
                "mode": "kuberay",
                "workerGroups": [{"name": "w", "replicas": 5, "maxReplicas": 2}],
            }
        ),
        "minReplicas <= replicas <= maxReplicas",
    ),
    ("short-progress-deadline", _set("progressDeadlineSeconds", 5), "spec.progressDeadlineSeconds"),
    ("empty-command", _set("runner.command", []), "spec.runner.command"),
    ("suspend-not-bool", _set("suspend", "yes"), "spec.suspend"),
    (
        "bad-group-name",
        lambda j: j["spec"].update(ray={"mode": "kuberay", "workerGroups": [{"name": "Bad_Name"}]}),
        "spec.ray.workerGroups[0].name",
    ),
]


@pytest.mark.parametrize(("case", "edit", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_kubectl_apply_refuses_with_the_field_named(
    k8s_cluster: Cluster,
    namespace: str,
    crd: None,
    case: str,
    edit: Callable[[Obj], None],
    message: str,
) -> None:
    job = copy.deepcopy(example_job())
    edit(job)
    out = apply(k8s_cluster, namespace, job, check=False)
    assert out.returncode != 0, f"{case} was accepted"
    assert message in out.stderr, out.stderr
    assert runner_pods(k8s_cluster, namespace, "demo") == []


def test_the_recipe_is_immutable_once_started_unless_suspended(
    k8s_cluster: Cluster, namespace: str, crd: None
) -> None:
    job = example_job()
    apply(k8s_cluster, namespace, job)
    k8s_cluster.kubectl(
        "patch",
        "djjob",
        "demo",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"startTime": "2026-11-30T05:00:00Z"}}),
    )
    patch = {"spec": {"recipe": {**job["spec"]["recipe"], "partition_size": 10}}}
    out = k8s_cluster.kubectl(
        "patch",
        "djjob",
        "demo",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(patch),
        check=False,
    )
    assert out.returncode != 0
    assert "spec.recipe" in out.stderr and "suspend the job first" in out.stderr
    # Metadata updates (labels, finalizers) are never blocked.
    k8s_cluster.kubectl("label", "djjob", "demo", "-n", namespace, "team=data")
    k8s_cluster.kubectl(
        "patch",
        "djjob",
        "demo",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":["example.com/keep"]}}',
    )
    k8s_cluster.kubectl(
        "patch",
        "djjob",
        "demo",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    # Suspended, the recipe may change.
    k8s_cluster.kubectl(
        "patch", "djjob", "demo", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    k8s_cluster.kubectl(
        "patch", "djjob", "demo", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )
    assert job_obj(k8s_cluster, namespace, "demo")["spec"]["recipe"]["partition_size"] == 10


INVALID_RECIPES = [
    (
        "unknown-op",
        {"process": [{"text_lenght_filter": {"min_len": 5}}]},
        "did you mean 'text_length_filter'",
    ),
    ("unknown-key", {"proces": []}, "did you mean 'process'"),
    ("bad-param", {"process": [{"text_length_filter": {"min_len": "ten"}}]}, "min_len"),
    ("escaping-path", {"dataset_path": "../../etc/passwd.jsonl"}, "stays under /data"),
]


@pytest.mark.parametrize(
    ("case", "patch", "message"), INVALID_RECIPES, ids=[r[0] for r in INVALID_RECIPES]
)
def test_an_invalid_recipe_fails_the_job_at_once_without_a_pod(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    case: str,
    patch: Obj,
    message: str,
) -> None:
    job = example_job()
    job["spec"]["recipe"].update(patch)
    apply(k8s_cluster, namespace, job)
    failed = wait_phase(k8s_cluster, namespace, "demo", ("Failed",), timeout=60)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "InvalidSpec"
    assert failure["component"] == "validation"
    assert message in failure["message"]
    assert condition(failed, "SpecValid")["status"] == "False"
    assert condition(failed, "Failed")["status"] == "True"
    assert runner_pods(k8s_cluster, namespace, "demo") == []
    warnings = [e for e in events(k8s_cluster, namespace, "demo") if e["type"] == "Warning"]
    assert [(e["reason"], e.get("count", 1)) for e in warnings] == [("InvalidSpec", 1)]


def test_a_recipe_from_a_config_map_is_validated_too(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    job = example_job()
    recipe = dict(job["spec"].pop("recipe"))
    recipe["process"] = [{"clean_emial_mapper": None}]
    job["spec"]["recipeFrom"] = {"configMapKeyRef": {"name": "my-recipe"}}
    apply(k8s_cluster, namespace, job)
    pending = wait_phase(k8s_cluster, namespace, "demo", ("Pending",), timeout=60)
    assert "waiting for ConfigMap my-recipe" in condition(pending, "Running")["message"]
    import yaml

    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "my-recipe"},
        "data": {"recipe.yaml": yaml.safe_dump(recipe)},
    }
    apply(k8s_cluster, namespace, cm)
    failed = wait_phase(k8s_cluster, namespace, "demo", ("Failed",), timeout=60)
    assert "did you mean 'clean_email_mapper'" in failed["status"]["failure"]["message"]
    assert failed["status"]["failure"]["reason"] == "InvalidSpec"
    assert runner_pods(k8s_cluster, namespace, "demo") == []


def test_a_recipe_as_yaml_text_keeps_its_bare_items_through_kubectl_apply(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """Client-side `kubectl apply` of spec.recipeYAML with bare `- op_name:` items: the API
    server accepts it and the operator reads every item (here a misspelt one, named)."""
    import yaml

    job = example_job()
    recipe = dict(job["spec"].pop("recipe"))
    recipe["process"] = [{"whitespace_normalization_mapper": None}, {"clean_emial_mapper": None}]
    text = yaml.safe_dump(recipe, sort_keys=False)
    assert "- clean_emial_mapper: null\n" in text
    job["spec"]["recipeYAML"] = text.replace(": null\n", ":\n")
    apply(k8s_cluster, namespace, job)
    failed = wait_phase(k8s_cluster, namespace, "demo", ("Failed",), timeout=60)
    message = failed["status"]["failure"]["message"]
    assert "spec.recipeYAML" in message and "did you mean 'clean_email_mapper'" in message
    assert failed["status"]["failure"]["reason"] == "InvalidSpec"
    assert runner_pods(k8s_cluster, namespace, "demo") == []


POLICY_REFUSED = [
    # (case, spec.runner fields, the field and the rule the failure names)
    (
        "privileged",
        {"securityContext": {"privileged": True}},
        "spec.runner.securityContext.privileged",
        "(rule privileged)",
    ),
    (
        "host-path",
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        "spec.runner.volumes[0].hostPath",
        "(rule hostPath)",
    ),
    (
        "secret",
        {"volumes": [{"name": "s", "secret": {"secretName": "db-password"}}]},
        "spec.runner.volumes[0].secret.secretName",
        "(rule secrets)",
    ),
    (
        "root",
        {"podSecurityContext": {"runAsUser": 0}},
        "spec.runner.podSecurityContext.runAsUser",
        "(rule root)",
    ),
]


@pytest.mark.parametrize(
    ("case", "runner", "field", "rule"), POLICY_REFUSED, ids=[r[0] for r in POLICY_REFUSED]
)
def test_the_installation_policy_refuses_before_any_pod(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    case: str,
    runner: Obj,
    field: str,
    rule: str,
) -> None:
    job = example_job()
    job["spec"]["runner"].update(runner)
    apply(k8s_cluster, namespace, job)
    failed = wait_phase(k8s_cluster, namespace, "demo", ("Failed",), timeout=60)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "InvalidSpec"
    assert failure["message"].startswith(f"{field}: got ")
    assert rule in failure["message"]
    assert condition(failed, "SpecValid")["status"] == "False"
    assert runner_pods(k8s_cluster, namespace, "demo") == []
    assert "children" not in failed["status"] or "runnerPod" not in failed["status"]["children"]


OBJECT_STORE_REFUSED = [
    # (case, spec.storage.objectStore, recipe paths, the field and the words the failure names)
    (
        "secret-not-allowed",
        {"credentialsSecret": {"name": "team-admin-keys"}},
        {"dataset_path": "s3://bucket/in.jsonl", "export_path": "s3://bucket/out.jsonl"},
        "spec.storage.objectStore.credentialsSecret.name",
        "(rule secrets)",
    ),
    (
        "identity-not-allowed",
        {"webIdentity": {"serviceAccountName": "default"}},
        {"dataset_path": "s3://bucket/in.jsonl", "export_path": "s3://bucket/out.jsonl"},
        "spec.storage.objectStore.webIdentity.serviceAccountName",
        "(rule serviceAccounts)",
    ),
    (
        "relative-path-without-a-volume",
        {},
        {"dataset_path": "input/demo.jsonl", "export_path": "s3://bucket/out.jsonl"},
        "spec.recipe.dataset_path",
        "objectStore mounts no volume",
    ),
]


@pytest.mark.parametrize(
    ("case", "store", "paths", "field", "words"),
    OBJECT_STORE_REFUSED,
    ids=[r[0] for r in OBJECT_STORE_REFUSED],
)
def test_an_object_store_job_is_refused_before_any_pod(
    k8s_cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    case: str,
    store: Obj,
    paths: Obj,
    field: str,
    words: str,
) -> None:
    job = example_job()
    job["spec"]["storage"] = {"objectStore": {"workDir": "s3://bucket/work/demo", **store}}
    job["spec"]["runner"] = {}
    job["spec"]["recipe"].update(paths)
    apply(k8s_cluster, namespace, job)
    failed = wait_phase(k8s_cluster, namespace, "demo", ("Failed",), timeout=60)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "InvalidSpec"
    assert failure["message"].startswith(f"{field}: "), failure["message"]
    assert words in failure["message"]
    assert runner_pods(k8s_cluster, namespace, "demo") == []
    claims = k8s_cluster.kubectl("get", "pvc", "-n", namespace, "-o", "name").stdout
    assert claims.strip() == ""
