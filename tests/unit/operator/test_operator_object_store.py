"""A job on object storage (spec.storage.objectStore): the parser's refusals, the recipe's paths,
and every child the builders make: no claim and no data volume anywhere, the store's environment
on the runner and on every Ray container and nowhere else, credentials only by reference."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_fixtures import make_job

from dj_operator.api import constants as c
from dj_operator.api.crd import crd
from dj_operator.api.types import JobSpec, SpecError, parse_spec
from dj_operator.api.validation import validate_recipe, validate_spec, work_dir_for
from dj_operator.build import children, object_store
from dj_operator.status import times
from dj_operator.status.decide import Observed
from dj_operator.status.derive import derive
from dj_runner import contract

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "job-object-store.yaml"
WORK = "s3://corpora/jobs/demo"
OPS = [{"whitespace_normalization_mapper": {}}]
RECIPE = {
    "dataset_path": "s3://corpora/web/in.jsonl",
    "export_path": "s3://results/web/out.jsonl",
    "process": OPS,
}
SECRET = {"name": "s3-keys", "sessionTokenKey": "token"}
STORE = {
    "workDir": WORK,
    "endpoint": "https://oss-cn-hangzhou.aliyuncs.com",
    "region": "cn-hangzhou",
    "credentialsSecret": SECRET,
}
KUBERAY = {"mode": "kuberay", "workerGroups": [{"name": "w", "replicas": 2}]}
# A value that must never show up in a child: the Secret holds it, the job only names the Secret.
SECRET_VALUE = "wJalrXUtnFEMI-never-inline"


def _job(store: Obj | None = None, ray: Obj | None = None, **spec: Any) -> Obj:
    job = make_job()
    job["spec"] = {
        "recipe": copy.deepcopy(RECIPE),
        "storage": {"objectStore": copy.deepcopy(store if store is not None else STORE)},
        **({"ray": ray} if ray else {}),
        **spec,
    }
    return job


def _spec(job: Obj) -> JobSpec:
    spec = parse_spec(job["spec"])
    validate_spec(job["spec"], spec, job["metadata"]["name"], job["metadata"]["namespace"])
    return spec


# -- the parser ----------------------------------------------------------------------------------

BAD = [
    # (storage, field named, what is valid)
    ({"claimName": "c", "objectStore": STORE}, "spec.storage", "exactly one of claimName"),
    (
        {"volumeClaimTemplate": {"spec": {}}, "objectStore": STORE},
        "spec.storage",
        "volumeClaimTemplate and objectStore",
    ),
    ({"objectStore": {"region": "x"}}, "spec.storage.objectStore.workDir", "s3://bucket/prefix"),
    ({"objectStore": {"workDir": "/data/work"}}, "spec.storage.objectStore.workDir", "s3://"),
    (
        {"objectStore": {"workDir": "s3://Bad_Bucket/x"}},
        "spec.storage.objectStore.workDir",
        "lowercase",
    ),
    (
        {"objectStore": {"workDir": "s3://KEY:SECRET@bucket/x"}},
        "spec.storage.objectStore.workDir",
        "s3://bucket/prefix",
    ),
    (
        {"objectStore": {"workDir": WORK, "endpoint": "minio:9000"}},
        "spec.storage.objectStore.endpoint",
        "http(s)://host[:port]",
    ),
    (
        {"objectStore": {"workDir": WORK, "endpoint": "https://key:secret@minio:9000"}},
        "spec.storage.objectStore.endpoint",
        "without credentials",
    ),
    (
        {"objectStore": {"workDir": WORK, "region": "us east"}},
        "spec.storage.objectStore.region",
        "us-east-1",
    ),
    (
        {"objectStore": {"workDir": WORK, "credentialsSecret": {"key": "x"}}},
        "spec.storage.objectStore.credentialsSecret.name",
        "a Secret name",
    ),
    (
        {"objectStore": {"workDir": WORK, "webIdentity": {}}},
        "spec.storage.objectStore.webIdentity.serviceAccountName",
        "a ServiceAccount name",
    ),
    (
        {
            "objectStore": {
                "workDir": WORK,
                "credentialsSecret": {"name": "k"},
                "webIdentity": {"serviceAccountName": "sa"},
            }
        },
        "spec.storage.objectStore.webIdentity",
        "at most one of credentialsSecret and webIdentity",
    ),
    (
        {"objectStore": {"workDir": WORK}, "workDir": "runs/one"},
        "spec.storage.workDir",
        "set objectStore.workDir",
    ),
]


@pytest.mark.parametrize(("storage", "field", "expected"), BAD)
def test_bad_object_store_names_the_field_the_value_and_what_is_valid(
    storage: Obj, field: str, expected: str
) -> None:
    raw = {"recipe": RECIPE, "storage": storage}
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert err.value.field_path == field
    message = str(err.value)
    assert message.startswith(f"{field}: got ")
    assert expected in message


def test_the_crd_keeps_exactly_one_storage_form_and_one_credential_form() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    storage = schema["properties"]["spec"]["properties"]["storage"]
    rules = [r["rule"] for r in storage["x-kubernetes-validations"]]
    assert any("has(self.objectStore)" in r and ".size() == 1" in r for r in rules)
    assert "!has(self.objectStore) || !has(self.workDir)" in rules
    store = storage["properties"]["objectStore"]
    assert store["required"] == ["workDir"]
    assert store["properties"]["workDir"]["pattern"].startswith("^s3://")
    (rule,) = store["x-kubernetes-validations"]
    assert rule["rule"] == "!has(self.credentialsSecret) || !has(self.webIdentity)"
    secret = store["properties"]["credentialsSecret"]["properties"]
    assert secret["accessKeyIdKey"]["default"] == contract.ENV_AWS_ACCESS_KEY_ID
    assert secret["secretAccessKeyKey"]["default"] == contract.ENV_AWS_SECRET_ACCESS_KEY


def test_the_work_dir_is_the_uri_and_mount_is_none() -> None:
    spec = _spec(_job({"workDir": WORK + "/"}))
    assert spec.storage.mount is None
    assert work_dir_for(spec, "ns1", "demo") == WORK
    claim = parse_spec(make_job()["spec"])
    assert claim.storage.mount == "/data"


def test_runner_env_may_not_set_what_the_object_store_sets() -> None:
    job = _job(runner={"env": [{"name": "A", "value": "1"}, {"name": "AWS_REGION", "value": "x"}]})
    with pytest.raises(SpecError) as err:
        _spec(job)
    assert err.value.field_path == "spec.runner.env[1].name"
    assert "AWS_REGION" in str(err.value) and "spec.storage.objectStore" in str(err.value)
    # Variables the store does not set stay the job's own (e.g. AWS_REGION without a region).
    _spec(_job({"workDir": WORK}, runner={"env": [{"name": "AWS_REGION", "value": "x"}]}))


# -- the recipe's paths --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["dataset_path", "export_path"])
def test_a_relative_recipe_path_without_a_volume_is_refused_naming_the_key(key: str) -> None:
    recipe = {**RECIPE, key: "input/demo.jsonl" if key == "dataset_path" else "out/r.jsonl"}
    with pytest.raises(SpecError) as err:
        validate_recipe(recipe, None, work_dir=WORK, job_id="j")
    assert err.value.field_path == f"spec.recipe.{key}"
    assert "an s3:// URI" in str(err.value)
    assert "objectStore mounts no volume" in str(err.value)


def test_recipe_uris_and_placeholders_resolve_as_the_runner_will() -> None:
    recipe = {**RECIPE, "export_path": "{work_dir}/export/out.jsonl"}
    paths = validate_recipe(recipe, None, work_dir=WORK, job_id="j")
    assert paths == {
        "dataset_path": "s3://corpora/web/in.jsonl",
        "export_path": f"{WORK}/export/out.jsonl",
    }
    # An absolute path (under a mount of the job's own: the policy's check) is kept as it is.
    paths = validate_recipe({**RECIPE, "dataset_path": "/datasets/in.jsonl"}, None)
    assert paths["dataset_path"] == "/datasets/in.jsonl"


# -- the builders --------------------------------------------------------------------------------


def _children(job: Obj) -> tuple[list[Obj], list[tuple[str, Obj]]]:
    """Every child the builders make for `job` and every container (named) of its pods."""
    spec = _spec(job)
    identity = object_store.identity(spec)
    objs = [
        children.recipe_config_map(job, RECIPE),
        *children.runner_rbac(job, identity),
        children.network_policy(job, spec),
    ]
    runner = children.runner_pod(job, spec, 1, work_dir_for(spec, "ns1", "demo"))
    objs.append(runner)
    pods = [("runner", runner["spec"])]
    if spec.ray.mode == c.MODE_KUBERAY:
        cluster = children.ray_cluster(job, spec)
        objs.append(cluster)
        pods.append(("head", cluster["spec"]["headGroupSpec"]["template"]["spec"]))
        for group in cluster["spec"]["workerGroupSpecs"]:
            pods.append((group["groupName"], group["template"]["spec"]))
    return objs, pods


def _env(container: Obj) -> dict[str, Obj]:
    return {var["name"]: var for var in container.get("env") or []}


@pytest.mark.parametrize("ray", [None, KUBERAY], ids=["local", "kuberay"])
def test_no_child_has_a_claim_or_a_data_volume(ray: Obj | None) -> None:
    objs, pods = _children(_job(ray=ray))
    assert "PersistentVolumeClaim" not in {obj["kind"] for obj in objs}
    assert "persistentVolumeClaim" not in json.dumps(objs)
    for name, pod in pods:
        kinds = {key for volume in pod["volumes"] for key in volume if key != "name"}
        assert kinds <= {"configMap", "emptyDir"}, name  # the recipe and /tmp only
        assert c.DATA_VOLUME not in {v["name"] for v in pod["volumes"]}, name
        for container in [*pod["containers"], *pod.get("initContainers", [])]:
            mounts = {m["name"] for m in container.get("volumeMounts") or []}
            assert c.DATA_VOLUME not in mounts, (name, container["name"])


@pytest.mark.parametrize("ray", [None, KUBERAY], ids=["local", "kuberay"])
def test_the_store_reaches_the_runner_and_every_ray_container_by_reference(ray: Obj | None) -> None:
    _, pods = _children(_job(ray=ray))
    assert len(pods) == (3 if ray else 1)  # the runner, the head, the worker group
    for name, pod in pods:
        (container,) = pod["containers"]
        env = _env(container)
        assert env[contract.ENV_AWS_ENDPOINT_URL]["value"] == STORE["endpoint"], name
        assert env[contract.ENV_AWS_REGION]["value"] == "cn-hangzhou", name
        refs = {
            key: env[key]["valueFrom"]["secretKeyRef"]
            for key in (
                contract.ENV_AWS_ACCESS_KEY_ID,
                contract.ENV_AWS_SECRET_ACCESS_KEY,
                contract.ENV_AWS_SESSION_TOKEN,
            )
        }
        assert refs == {
            contract.ENV_AWS_ACCESS_KEY_ID: {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"},
            contract.ENV_AWS_SECRET_ACCESS_KEY: {
                "name": "s3-keys",
                "key": "AWS_SECRET_ACCESS_KEY",
            },
            contract.ENV_AWS_SESSION_TOKEN: {"name": "s3-keys", "key": "token"},
        }, name
        for key in refs:
            assert "value" not in env[key], (name, key)
    runner = pods[0][1]["containers"][0]
    assert runner["args"][runner["args"].index("--work-dir") + 1] == WORK
    assert runner["workingDir"] == c.NO_VOLUME_WORKING_DIR


def test_the_store_reaches_nothing_else() -> None:
    job = _job(ray=KUBERAY)
    job["spec"]["runner"] = {
        "initContainers": [{"name": "prep", "image": "busybox:1.36", "command": ["true"]}]
    }
    objs, pods = _children(job)
    (init,) = pods[0][1]["initContainers"]
    assert not any(var["name"].startswith("AWS_") for var in init.get("env") or [])
    text = json.dumps([o for o in objs if o["kind"] != "Pod" and o["kind"] != "RayCluster"])
    for needle in ("AWS_", "s3-keys", STORE["endpoint"]):
        assert needle not in text  # not the ConfigMap, the RBAC or the NetworkPolicy
    for obj in objs:
        assert "s3-keys" not in json.dumps(obj["metadata"])  # no annotation or label


def test_secret_values_never_reach_a_child_or_the_status() -> None:
    """Even a job that (wrongly) writes a key into runner.env as a value keeps it there only:
    the store's own variables are references, and the status names the bucket, not the key."""
    job = _job(ray=KUBERAY)
    job["spec"]["runner"] = {"env": [{"name": "MY_TOKEN", "value": SECRET_VALUE}]}
    objs, _ = _children(job)
    config_map = objs[0]
    assert SECRET_VALUE not in json.dumps(config_map)
    spec = _spec(job)
    out = derive(
        Observed(
            job=job,
            spec=spec,
            spec_error=None,
            pods=[],
            now=times.now(),
            work_dir=work_dir_for(spec, "ns1", "demo"),
            output_path=RECIPE["export_path"],
        )
    )
    status = json.dumps(out.status)
    assert out.status["workDir"] == WORK
    assert out.status["outputPath"] == RECIPE["export_path"]
    assert "claim" not in out.status["children"]
    for needle in (SECRET_VALUE, "s3-keys", "AWS_", STORE["endpoint"]):
        assert needle not in status
    events = json.dumps([e.message for e in out.events])
    assert "s3-keys" not in events and SECRET_VALUE not in events


def test_web_identity_runs_every_pod_as_the_named_service_account() -> None:
    store = {
        "workDir": WORK,
        "region": "us-west-2",
        "webIdentity": {
            "serviceAccountName": "s3-reader",
            "roleArn": "arn:aws:iam::123456789012:role/corpora-read",
        },
    }
    job = _job(store, ray=KUBERAY)
    objs, pods = _children(job)
    for name, pod in pods:
        assert pod["serviceAccountName"] == "s3-reader", name
        (container,) = pod["containers"]
        env = _env(container)
        assert env[contract.ENV_AWS_ROLE_ARN]["value"] == store["webIdentity"]["roleArn"]
        token_file = env[contract.ENV_AWS_WEB_IDENTITY_TOKEN_FILE]["value"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == c.TOKEN_VOLUME]
        assert token_file == f"{mount['mountPath']}/{c.TOKEN_FILE}" and mount["readOnly"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == c.TOKEN_VOLUME]
        (source,) = volume["projected"]["sources"]
        assert source["serviceAccountToken"]["audience"] == c.DEFAULT_TOKEN_AUDIENCE
        assert contract.ENV_AWS_ACCESS_KEY_ID not in env
    # The runner keeps its API token (it reports progress) and its Role binds the identity;
    # the Ray pods get no API token.
    assert pods[0][1]["automountServiceAccountToken"] is True
    for name, pod in pods[1:]:
        assert pod["automountServiceAccountToken"] is False, name
    (binding,) = [o for o in objs if o["kind"] == "RoleBinding"]
    assert {s["name"] for s in binding["subjects"]} == {"demo-runner", "s3-reader"}
    spec = _spec(job)
    out = derive(Observed(job=job, spec=spec, spec_error=None, pods=[], now=times.now()))
    kids = out.status["children"]
    assert kids["serviceAccount"] == "s3-reader" and kids["rayServiceAccount"] == "s3-reader"


def test_an_sts_endpoint_of_its_own_reaches_the_runner_and_every_ray_pod() -> None:
    """A store whose STS is on another host than its S3 endpoint: AWS_ENDPOINT_URL_STS, which
    the runner's web-identity exchange reads (store/location.py)."""
    sts = "https://sts.store.example:8443"
    store = {
        "workDir": WORK,
        "endpoint": "https://s3.store.example",
        "webIdentity": {
            "serviceAccountName": "s3-reader",
            "roleArn": "arn:aws:iam::123456789012:role/corpora-read",
            "stsEndpoint": sts,
        },
    }
    _, pods = _children(_job(store, ray=KUBERAY))
    assert len(pods) >= 3  # the runner, the head, a worker
    for name, pod in pods:
        env = _env(pod["containers"][0])
        assert env[contract.ENV_AWS_ENDPOINT_URL_STS]["value"] == sts, name
        assert env[contract.ENV_AWS_ENDPOINT_URL]["value"] == store["endpoint"], name
    # Without it, no STS variable: the runner then uses `endpoint` (or AWS STS).
    del store["webIdentity"]["stsEndpoint"]
    _, pods = _children(_job(store, ray=KUBERAY))
    assert all(contract.ENV_AWS_ENDPOINT_URL_STS not in _env(p["containers"][0]) for _, p in pods)


@pytest.mark.parametrize(
    "bad", ["sts.example.com", "https://user:pw@sts.example.com", "ftp://sts.example.com"]
)
def test_an_sts_endpoint_that_is_no_http_url_is_refused_naming_the_field(bad: str) -> None:
    store = {
        "workDir": WORK,
        "webIdentity": {"serviceAccountName": "s3-reader", "stsEndpoint": bad},
    }
    with pytest.raises(SpecError) as err:
        _spec(_job(store))
    assert "stsEndpoint" in str(err.value) and "http(s)://host[:port]" in str(err.value)


def test_web_identity_without_a_role_leaves_the_token_to_the_platform() -> None:
    job = _job({"workDir": WORK, "webIdentity": {"serviceAccountName": "s3-reader"}})
    _, pods = _children(job)
    pod = pods[0][1]
    assert pod["serviceAccountName"] == "s3-reader"
    assert c.TOKEN_VOLUME not in {v["name"] for v in pod["volumes"]}
    assert not any(v["name"].startswith("AWS_") for v in pod["containers"][0]["env"])


def test_the_example_is_an_object_store_job_in_kuberay_mode() -> None:
    job = yaml.safe_load(EXAMPLE.read_text())
    job["metadata"].update(namespace="ns1", uid="0123456789abcdef", generation=1)
    spec = _spec(job)
    assert spec.storage.object_store is not None and spec.ray.mode == c.MODE_KUBERAY
    assert spec.recipe is not None
    paths = validate_recipe(spec.recipe, spec.storage.mount)
    assert all(p.startswith("s3://") for p in paths.values())
    objs, pods = _children(job)
    assert "persistentVolumeClaim" not in json.dumps(objs)
    assert len(pods) == 2 + len(spec.ray.worker_groups)  # the runner, the head, the groups
