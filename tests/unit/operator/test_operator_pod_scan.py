"""The scanner: every child the real builders make for every example job, in each Ray mode, with
and without the chart's installation defaults: every pod (the runner pod and each RayCluster
template, with the init container KubeRay adds to workers) meets the Pod Security Standard
`restricted`, every example passes the default policy (an object-store example: a policy that
admits exactly the Secret it names), and every child is owned by the job."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from dj_operator.api import constants as c
from dj_operator.api.types import BUILTIN_DEFAULTS, OperatorDefaults, parse_spec
from dj_operator.api.validation import validate_recipe, validate_spec, work_dir_for
from dj_operator.build import children, object_store
from dj_operator.policy import DEFAULT_POLICY, Policy, check_job, check_paths
from dj_runner import contract
from tests.harness.psa import restricted_violations

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("job*.yaml"))
CHART_VALUES = yaml.safe_load((ROOT / "charts" / "datajuicer-operator" / "values.yaml").read_text())
CHART_DEFAULTS = OperatorDefaults(
    security_context=CHART_VALUES["runner"]["securityContext"],
    pod_security_context=CHART_VALUES["runner"]["podSecurityContext"],
)
RECIPE = yaml.safe_load((ROOT / "examples" / "recipe.yaml").read_text())
MODES = {
    c.MODE_LOCAL: {"mode": "local"},
    c.MODE_EXTERNAL: {"mode": "external", "address": "ray://head.ray.svc:10001"},
    c.MODE_KUBERAY: {"mode": "kuberay", "workerGroups": [{"name": "w", "replicas": 1}]},
}


def _job(path: Path, mode: str) -> Obj:
    job = yaml.safe_load(path.read_text())
    job["metadata"].update(namespace="team-a", uid="0123456789abcdef", generation=1)
    ray = job["spec"].get("ray") or {}
    if ray.get("mode", c.MODE_LOCAL) != mode:
        job["spec"]["ray"] = copy.deepcopy(MODES[mode])
    return job


def _policy(job: Obj) -> Policy:
    """The default policy, admitting the credentials Secret an object-store example names."""
    store = job["spec"]["storage"].get("objectStore") or {}
    secret = (store.get("credentialsSecret") or {}).get("name")
    if secret is None:
        return DEFAULT_POLICY
    return Policy(allowed_secrets=frozenset({secret}))


def _with_kuberay_init(template: Obj) -> Obj:
    """A worker template as KubeRay makes its pods: it adds the wait-gcs-ready init container
    with a copy of the Ray container's securityContext."""
    spec = copy.deepcopy(template["spec"])
    ray = spec["containers"][0]
    spec.setdefault("initContainers", []).append(
        {
            "name": "wait-gcs-ready",
            "image": ray["image"],
            "securityContext": copy.deepcopy(ray.get("securityContext")),
        }
    )
    return spec


def _children(job: Obj, defaults: OperatorDefaults) -> tuple[list[Obj], list[tuple[str, Obj]]]:
    """Every child object and every pod spec (named) that the builders make for `job`."""
    spec = parse_spec(job["spec"], defaults)
    meta = job["metadata"]
    objs = [
        children.recipe_config_map(job, spec.recipe or RECIPE),
        *children.runner_rbac(job, object_store.identity(spec)),
    ]
    objs.append(children.network_policy(job, spec))
    if spec.storage.volume_claim_template is not None:
        objs.append(children.claim(job, spec))
    work_dir = work_dir_for(spec, meta["namespace"], meta["name"])
    runner = children.runner_pod(job, spec, 1, work_dir)
    objs.append(runner)
    pods = [("runner pod", runner["spec"])]
    if spec.ray.mode == c.MODE_KUBERAY:
        cluster = children.ray_cluster(job, spec)
        objs += [cluster, children.ray_service_account(job)]
        pods.append(("ray head", cluster["spec"]["headGroupSpec"]["template"]["spec"]))
        for group in cluster["spec"].get("workerGroupSpecs") or []:
            pods.append((f"ray worker {group['groupName']}", _with_kuberay_init(group["template"])))
    return objs, pods


CASES = [
    (path, mode, defaults)
    for path in EXAMPLES
    for mode in MODES
    for defaults in ("builtin", "chart")
]


def test_the_examples_are_found() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "job.yaml",
        "job-kuberay.yaml",
        "job-external.yaml",
        "job-object-store.yaml",
    }


@pytest.mark.parametrize(
    ("path", "mode", "defaults"), CASES, ids=[f"{p.stem}-{m}-{d}" for p, m, d in CASES]
)
def test_every_pod_of_every_example_is_restricted(path: Path, mode: str, defaults: str) -> None:
    job = _job(path, mode)
    installation = CHART_DEFAULTS if defaults == "chart" else BUILTIN_DEFAULTS
    spec = parse_spec(job["spec"], installation)
    validate_spec(job["spec"], spec, job["metadata"]["name"], job["metadata"]["namespace"])
    check_job(job["spec"], _policy(job))
    paths = validate_recipe(spec.recipe or RECIPE, spec.storage.mount)
    check_paths(paths, spec.storage.mount, job["spec"], "spec.recipe")
    objs, pods = _children(job, installation)
    for name, pod in pods:
        assert restricted_violations(pod) == [], f"{path.name} ({mode}) {name}"
    for obj in objs:
        if obj["kind"] == "PersistentVolumeClaim" and "ownerReferences" not in obj["metadata"]:
            continue  # whenDeleted: Retain
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == "0123456789abcdef" and ref["controller"] is True, obj["kind"]
    if mode == c.MODE_KUBERAY:
        for name, pod in pods[1:]:
            assert pod["automountServiceAccountToken"] is False, name


def test_the_scanner_finds_what_restricted_forbids() -> None:
    """The check itself: each forbidden setting is reported."""
    job = _job(EXAMPLES[0], c.MODE_LOCAL)
    _, [(_, pod)] = _children(job, BUILTIN_DEFAULTS)
    assert restricted_violations(pod) == []
    bad = copy.deepcopy(pod)
    bad["hostNetwork"] = True
    bad["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    container = bad["containers"][0]["securityContext"]
    container.update(privileged=True, allowPrivilegeEscalation=True, runAsUser=0)
    container["capabilities"] = {"add": ["SYS_ADMIN"]}
    del bad["securityContext"]["seccompProfile"], bad["securityContext"]["runAsNonRoot"]
    found = " | ".join(restricted_violations(bad))
    for words in (
        "hostNetwork",
        "hostPath",
        "privileged",
        "allowPrivilegeEscalation",
        "capabilities.drop lacks ALL",
        "capabilities.add",
        "seccompProfile None",
        "runAsNonRoot is not true",
        "runAsUser 0",
    ):
        assert words in found, (words, found)


def test_the_network_policy_admits_the_jobs_pods_and_the_scraper() -> None:
    job = _job(ROOT / "examples" / "job-kuberay.yaml", c.MODE_KUBERAY)
    job["spec"]["runner"]["metricsPort"] = 9090
    spec = parse_spec(job["spec"])
    peers = ({"namespaceSelector": {"matchLabels": {"name": "monitoring"}}},)
    policy = children.network_policy(job, spec, peers)
    selector = {"matchLabels": {contract.LABEL_JOB: "demo-kuberay"}}
    assert policy["spec"]["podSelector"] == selector
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    own, metrics = policy["spec"]["ingress"]
    assert own == {"from": [{"podSelector": selector}]}
    assert metrics["from"] == list(peers)
    assert [p["port"] for p in metrics["ports"]] == [c.DEFAULT_RAY_METRICS_PORT, 9090]
    # Every pod of the job carries the label the policy selects, and no other job's does.
    cluster = children.ray_cluster(job, spec)["spec"]
    runner = children.runner_pod(job, spec, 1, "/data/w")
    for labels in (
        runner["metadata"]["labels"],
        cluster["headGroupSpec"]["template"]["metadata"]["labels"],
        cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"],
    ):
        assert selector["matchLabels"].items() <= labels.items()
    anyone = children.network_policy(job, spec)["spec"]["ingress"][1]
    assert "from" not in anyone
