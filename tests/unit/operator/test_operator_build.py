"""The pure builders: names, labels, owner references and every child manifest."""

from __future__ import annotations

import pytest
from operator_fixtures import make_job

from dj_operator.api import constants as c
from dj_operator.api.types import parse_spec
from dj_operator.build import children, names
from dj_runner import contract


@pytest.mark.parametrize(
    ("job", "attempt"),
    [("demo", 1), ("a" * 63, 12), ("x" * 40 + "-" * 5 + "y" * 30, 100), ("j" * 253, 3)],
)
def test_runner_pod_names_fit_a_dns_label_and_stay_distinct(job: str, attempt: int) -> None:
    name = names.runner_pod(job, attempt)
    assert len(name) <= 63
    assert name.endswith(f"-runner-{attempt}")
    assert names.runner_pod(job, attempt) == name  # deterministic
    assert names.runner_pod(job + "z", attempt) != name


def test_short_names_are_kept_verbatim() -> None:
    assert names.runner_pod("demo", 2) == "demo-runner-2"
    assert names.config_map("demo") == "demo-recipe"
    assert names.claim("demo") == "demo-data"
    assert names.ray_cluster("demo") == "demo-ray"
    assert len(names.ray_cluster("r" * 100)) <= 47


def test_job_id_is_stable_and_distinct_per_uid() -> None:
    assert names.job_id("ns", "demo", "0123456789ab") == "ns-demo-01234567"
    assert names.job_id("ns", "demo", "abcdef") != names.job_id("ns", "demo", "0123456789ab")


def test_runner_pod() -> None:
    job = make_job()
    spec = parse_spec(job["spec"])
    pod = children.runner_pod(job, spec, 2, "/data/.datajuicer/ns1/demo")
    meta = pod["metadata"]
    assert meta["name"] == "demo-runner-2"
    assert meta["labels"][contract.LABEL_ATTEMPT] == "2"
    assert meta["labels"][contract.LABEL_MANAGED_BY] == contract.OPERATOR_NAME
    assert meta["labels"][contract.LABEL_JOB] == "demo"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "name": "demo",
            "uid": "0123456789abcdef",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    ps = pod["spec"]
    assert ps["restartPolicy"] == "Never"
    assert ps["serviceAccountName"] == "demo-runner"
    assert ps["terminationGracePeriodSeconds"] == 40
    (container,) = ps["containers"]
    assert container["command"] == ["dj-runner"]
    assert container["args"] == [
        "run",
        "/etc/datajuicer/recipe.yaml",
        "--work-dir",
        "/data/.datajuicer/ns1/demo",
        "--job-id",
        "ns1-demo-01234567",
        "--wait-for-lock",
        "60",
        "--grace-period",
        "30",
    ]
    assert container["workingDir"] == "/data"
    assert "ports" not in container  # no metricsPort: no endpoint
    assert container["env"][:2] == [
        {"name": contract.ENV_JOB_NAME, "value": "demo"},
        {"name": contract.ENV_JOB_NAMESPACE, "value": "ns1"},
    ]
    volumes = {v["name"]: v for v in ps["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "demo-data"}
    assert volumes["recipe"]["configMap"] == {"name": "demo-recipe"}
    assert volumes["seed"]["configMap"] == {"name": "demo-data"}
    assert volumes["datajuicer-tmp"] == {"name": "datajuicer-tmp", "emptyDir": {}}
    assert {"name": "datajuicer-tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    (init,) = ps["initContainers"]
    assert [m["name"] for m in init["volumeMounts"]] == ["data", "seed"]
    assert init["volumeMounts"][0]["mountPath"] == "/data"


@pytest.mark.parametrize(
    ("ray", "address"),
    [
        ({"mode": "local"}, None),
        ({"mode": "external", "address": "ray://head:10001"}, "ray://head:10001"),
        ({"mode": "kuberay"}, f"ray://demo-ray{contract.RAY_HEAD_SERVICE_SUFFIX}.ns1.svc:10001"),
        (
            {"mode": "kuberay", "headGroup": {"ports": {"client": 20001}}},
            f"ray://demo-ray{contract.RAY_HEAD_SERVICE_SUFFIX}.ns1.svc:20001",
        ),
    ],
)
def test_ray_address_per_mode(ray: dict, address: str | None) -> None:
    job = make_job()
    job["spec"]["ray"] = ray
    spec = parse_spec(job["spec"])
    args = children.runner_pod(job, spec, 1, "/w")["spec"]["containers"][0]["args"]
    if address is None:
        assert "--ray-address" not in args
    else:
        assert args[args.index("--ray-address") + 1] == address


def test_claim_is_owned_only_when_deleted_with_the_job() -> None:
    job = make_job()
    kept = children.claim(job, parse_spec(job["spec"]))
    assert "ownerReferences" not in kept["metadata"]
    assert kept["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    job["spec"]["storage"]["whenDeleted"] = "Delete"
    owned = children.claim(job, parse_spec(job["spec"]))
    assert owned["metadata"]["ownerReferences"][0]["uid"] == "0123456789abcdef"


def test_runner_rbac_grants_only_its_own_status() -> None:
    sa, role, binding = children.runner_rbac(make_job())
    assert sa["kind"] == "ServiceAccount" and sa["metadata"]["name"] == "demo-runner"
    assert role["rules"] == [
        {
            "apiGroups": ["datajuicer.io"],
            "resources": ["datajuicerjobs/status"],
            "resourceNames": ["demo"],
            "verbs": ["patch"],
        }
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "demo-runner", "namespace": "ns1"}
    ]
    assert binding["roleRef"]["name"] == "demo-runner"


def test_recipe_config_map_keeps_relative_paths() -> None:
    job = make_job()
    cm = children.recipe_config_map(job, job["spec"]["recipe"])
    text = cm["data"]["recipe.yaml"]
    assert "dataset_path: input/demo.jsonl" in text
    assert "export_path: output/result.jsonl" in text


def test_ray_cluster() -> None:
    job = make_job()
    job["spec"]["ray"] = {
        "mode": "kuberay",
        "headGroup": {"rayStartParams": {"num-cpus": "1"}, "ports": {"gcs": 6380}},
        "workerGroups": [{"name": "w", "replicas": 2, "maxReplicas": 3}],
    }
    cluster = children.ray_cluster(job, parse_spec(job["spec"]))
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["port"] == "6380"
    assert head["rayStartParams"]["ray-client-server-port"] == "10001"
    assert head["rayStartParams"]["num-cpus"] == "1"
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert (group["groupName"], group["replicas"], group["maxReplicas"]) == ("w", 2, 3)
    for template in (head["template"], group["template"]):
        assert template["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "demo-data"
        assert template["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/data"


def test_ray_pods_drain_briefly_and_end_within_their_grace_period() -> None:
    job = make_job()
    job["spec"]["ray"] = {"mode": "kuberay", "workerGroups": [{"name": "a"}, {"name": "b"}]}
    cluster = children.ray_cluster(job, parse_spec(job["spec"]))["spec"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]
    assert len(templates) == 3
    for template in templates:
        assert template["spec"]["terminationGracePeriodSeconds"] == 10
        (container,) = template["spec"]["containers"]
        drain = {"name": "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "value": "5"}
        assert drain in container["env"]
    # Ray's own drain ends (and its processes stop) before the grace period kills them.
    assert c.RAY_DRAIN_TIMEOUT_SECONDS < c.RAY_POD_GRACE_SECONDS


def test_the_ray_head_starts_ray_client_servers_without_grpcs_fork_handlers() -> None:
    job = make_job()
    job["spec"]["ray"] = {"mode": "kuberay", "workerGroups": [{"name": "a"}]}
    cluster = children.ray_cluster(job, parse_spec(job["spec"]))["spec"]
    off = {"name": "GRPC_ENABLE_FORK_SUPPORT", "value": "false"}
    (head,) = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    (worker,) = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    assert off in head["env"]
    assert off not in worker["env"]  # no Ray Client proxier there


def test_the_kuberay_runner_waits_for_the_head_and_every_worker() -> None:
    job = make_job()
    job["spec"]["ray"] = {
        "mode": "kuberay",
        "workerGroups": [{"name": "a", "replicas": 2, "maxReplicas": 2}, {"name": "b"}],
    }
    env = children.runner_pod(job, parse_spec(job["spec"]), 1, "/w")["spec"]["containers"][0]
    assert {"name": contract.ENV_RAY_MIN_NODES, "value": "4"} in env["env"]
    assert {"name": contract.ENV_RAY_CONNECT_TIMEOUT, "value": "600"} in env["env"]
    job["spec"]["ray"] = {"mode": "local"}
    env = children.runner_pod(job, parse_spec(job["spec"]), 1, "/w")["spec"]["containers"][0]
    assert all(e["name"] != contract.ENV_RAY_MIN_NODES for e in env["env"])


HEAD_READY = {"type": "HeadPodReady", "status": "True"}
PROVISIONED = {"type": "RayClusterProvisioned", "status": "True"}


@pytest.mark.parametrize(
    ("status", "ready"),
    [
        (None, False),
        ({}, False),
        ({"state": "ready", "conditions": [HEAD_READY]}, True),
        # KubeRay keeps `ready` after the head pod dies: HeadPodReady decides.
        ({"state": "ready"}, False),
        ({"state": "ready", "conditions": [{**HEAD_READY, "status": "False"}]}, False),
        ({"state": "failed", "conditions": [HEAD_READY]}, False),
        ({"conditions": [PROVISIONED, HEAD_READY]}, True),
        ({"conditions": [HEAD_READY]}, False),
        # Every desired worker pod ready, not only the head.
        (
            {
                "state": "ready",
                "conditions": [HEAD_READY],
                "desiredWorkerReplicas": 2,
                "readyWorkerReplicas": 1,
            },
            False,
        ),
        (
            {
                "state": "ready",
                "conditions": [HEAD_READY],
                "desiredWorkerReplicas": 2,
                "readyWorkerReplicas": 2,
            },
            True,
        ),
    ],
)
def test_ray_cluster_ready(status: dict | None, ready: bool) -> None:
    cluster = None if status is None else {"metadata": {}, "status": status}
    assert children.ray_cluster_ready(cluster) is ready


def test_a_job_mounting_its_own_tmp_gets_no_second_one() -> None:
    job = make_job()
    job["spec"]["runner"]["volumes"].append({"name": "scratch", "emptyDir": {"medium": "Memory"}})
    job["spec"]["runner"]["volumeMounts"] = [{"name": "scratch", "mountPath": "/tmp/"}]
    pod = children.runner_pod(job, parse_spec(job["spec"]), 1, "/w")
    assert "datajuicer-tmp" not in {v["name"] for v in pod["spec"]["volumes"]}
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in mounts].count("/tmp/") == 1


def test_a_metrics_port_is_served_on_all_addresses_and_declared() -> None:
    job = make_job()
    job["spec"]["runner"]["metricsPort"] = 9090
    spec = parse_spec(job["spec"])
    pod = children.runner_pod(job, spec, 1, "/data/.datajuicer/ns1/demo")
    (container,) = pod["spec"]["containers"]
    assert container["args"][-4:] == ["--metrics-port", "9090", "--metrics-host", "0.0.0.0"]
    assert container["ports"] == [
        {"name": contract.METRICS_PORT_NAME, "containerPort": 9090, "protocol": "TCP"}
    ]


def _tolerations(runner: dict | None = None, defaults: object = None) -> list[dict]:
    job = make_job()
    job["spec"].setdefault("runner", {}).update(runner or {})
    spec = parse_spec(job["spec"]) if defaults is None else parse_spec(job["spec"], defaults)
    return children.runner_pod(job, spec, 1, "/w")["spec"]["tolerations"]


def test_the_runner_leaves_a_lost_node_after_node_lost_toleration_seconds() -> None:
    """Kubernetes would give the pod 300 s on a node that stopped reporting; the runner pod
    tolerates each of a lost node's taints for nodeLostTolerationSeconds (the installation's
    default), and the job's own tolerations of them win."""
    from dataclasses import replace

    from dj_operator.api.types import BUILTIN_DEFAULTS

    def bounded(seconds: int) -> list[dict]:
        return [
            {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
            for key in c.NODE_LOST_TAINTS
        ]

    assert _tolerations() == bounded(c.DEFAULT_NODE_LOST_TOLERATION_SECONDS)
    assert _tolerations({"nodeLostTolerationSeconds": 5}) == bounded(5)
    installation = replace(BUILTIN_DEFAULTS, node_lost_toleration_seconds=20)
    assert _tolerations(defaults=installation) == bounded(20)
    own = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
    gpu = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert _tolerations({"tolerations": [own, gpu]}) == [own, gpu, bounded(60)[1]]
    everything = {"operator": "Exists"}
    assert _tolerations({"tolerations": [everything]}) == [everything]


def test_ray_pods_leave_a_lost_node_as_the_runner_does() -> None:
    job = make_job()
    job["spec"]["ray"] = {"mode": "kuberay", "workerGroups": [{"name": "w", "replicas": 1}]}
    job["spec"].setdefault("runner", {})["nodeLostTolerationSeconds"] = 7
    cluster = children.ray_cluster(job, parse_spec(job["spec"]))
    templates = [cluster["spec"]["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["spec"]["workerGroupSpecs"]
    ]
    for template in templates:
        seconds = {t["key"]: t["tolerationSeconds"] for t in template["spec"]["tolerations"]}
        assert seconds == dict.fromkeys(c.NODE_LOST_TAINTS, 7)


def test_a_ray_pod_leads_back_to_its_job_whatever_the_names_length() -> None:
    """A Ray pod left of a deleted RayCluster names its job (`names.ray_pod_job`): by the
    annotation on every Ray pod template, whole even where the job label is fitted to 63
    characters; a pod without it (an older operator's) by a label that is a whole name."""
    for name in ("demo", "j" * 200):
        job = make_job()
        job["metadata"]["name"] = name
        job["spec"]["ray"] = {"mode": "kuberay", "workerGroups": [{"name": "w"}]}
        cluster = children.ray_cluster(job, parse_spec(job["spec"]))["spec"]
        templates = [cluster["headGroupSpec"]["template"]]
        templates += [g["template"] for g in cluster["workerGroupSpecs"]]
        for template in templates:
            pod_meta = template["metadata"]
            assert names.ray_pod_job({"metadata": pod_meta}) == name
            older = {k: v for k, v in pod_meta.items() if k != "annotations"}
            assert names.ray_pod_job({"metadata": older}) == (name if len(name) < 63 else None)
    assert names.ray_pod_job({"metadata": {}}) is None
