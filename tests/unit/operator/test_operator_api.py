"""The API: spec parsing with defaults, the errors it names, recipe validation, the CRD file."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from operator_fixtures import make_job

from dj_operator.api import constants as c
from dj_operator.api import fields
from dj_operator.api.crd import crd, render
from dj_operator.api.types import OperatorDefaults, SpecError, parse_spec
from dj_operator.api.validation import validate_recipe, work_dir_for

ROOT = Path(__file__).resolve().parents[3]


def test_committed_crd_equals_the_generated_one() -> None:
    committed = (ROOT / "crds" / "datajuicer.io_datajuicerjobs.yaml").read_text()
    assert committed == render(), (
        "run: python -m dj_operator.api.crd > crds/datajuicer.io_datajuicerjobs.yaml"
    )


def _walk(schema: dict, path: str):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")


def test_every_spec_and_status_field_is_described() -> None:
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, schema in _walk(root["properties"][part], part):
            if path.endswith("[]") and "x-kubernetes-preserve-unknown-fields" in schema:
                continue
            if path.endswith("[]"):
                continue
            assert schema.get("description"), f"{path} has no description"


def test_crd_names_and_columns() -> None:
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["djjob"]
    assert "all" in spec["names"]["categories"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [col["name"] for col in version["additionalPrinterColumns"]] == [
        "Phase",
        "Progress",
        "Samples-Out",
        "Restarts",
        "Workers",
        "Checkpoint",
        "Last-Checkpoint",
        "Age",
    ]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    # `kubectl get -o wide` only: kuberay's workers, where a resume starts and its age.
    assert wide == ["Workers", "Checkpoint", "Last-Checkpoint"]


def test_every_list_is_bounded() -> None:
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, schema in _walk(root["properties"]["spec"], "spec"):
        if schema.get("type") == "array":
            assert "maxItems" in schema, path


def _spec_fields(schema: dict, path: str):
    """(path, schema) of each field of the CRD's spec that has a default."""
    for key, sub in (schema.get("properties") or {}).items():
        if "default" in sub and sub.get("type") != "object":
            yield f"{path}.{key}", sub["default"]
        yield from _spec_fields(sub, f"{path}.{key}")


def _attr(value: object, path: str) -> object:
    for key in path.split(".")[1:]:
        value = getattr(value, re.sub(r"([A-Z])", r"_\1", key).lower())
    return value


def test_parsing_applies_every_default_the_crd_declares() -> None:
    """One description makes both: an absent field parses to the CRD's default."""
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    defaults = dict(_spec_fields(root, "spec"))
    assert len(defaults) >= 12, defaults
    spec = parse_spec(make_job()["spec"])
    # The object-store form, once with each way to credentials (both at once are refused).
    stores = []
    for credentials in (
        {"credentialsSecret": {"name": "s3"}},
        {"webIdentity": {"serviceAccountName": "sa"}},
    ):
        raw = copy.deepcopy(make_job()["spec"])
        raw["storage"] = {"objectStore": {"workDir": "s3://bucket/work", **credentials}}
        stores.append(parse_spec(raw))
    for path, default in defaults.items():
        if path.startswith("spec.recipeFrom"):
            continue
        if path.startswith("spec.storage.objectStore.credentialsSecret."):
            assert _attr(stores[0], path) == default, path
        elif path.startswith("spec.storage.objectStore.webIdentity."):
            assert _attr(stores[1], path) == default, path
        else:
            assert _attr(spec, path) == default, path
    ref = parse_spec(
        {"storage": {"claimName": "c"}, "recipeFrom": {"configMapKeyRef": {"name": "r"}}}
    )
    assert ref.recipe_from is not None
    assert ref.recipe_from.config_map_key_ref.key == defaults["spec.recipeFrom.configMapKeyRef.key"]


def test_operator_defaults_fill_what_the_crd_leaves_open() -> None:
    installed = OperatorDefaults(
        runner_image="reg/runner:1",
        ray_image="reg/ray:1",
        security_context={"runAsNonRoot": True},
        runner_metrics_port=9090,
    )
    spec = parse_spec(make_job()["spec"], installed)
    assert spec.runner.image == "reg/runner:1" and spec.ray.image == "reg/ray:1"
    assert spec.runner.security_context == {"runAsNonRoot": True}
    assert spec.runner.metrics_port == 9090
    raw = copy.deepcopy(make_job()["spec"])
    raw["runner"] = {"image": "mine:2", "metricsPort": 0, "securityContext": {}}
    own = parse_spec(raw, installed)
    assert own.runner.image == "mine:2" and own.runner.metrics_port == 0
    assert own.runner.security_context == {"runAsNonRoot": True}  # empty: the installation's


def test_worker_group_max_replicas_defaults_to_replicas() -> None:
    raw = {
        **make_job()["spec"],
        "ray": {"mode": "kuberay", "workerGroups": [{"name": "w", "replicas": 3}]},
    }
    group = parse_spec(raw).ray.worker_groups[0]
    assert (group.replicas, group.min_replicas, group.max_replicas) == (3, 0, 3)


def test_a_field_without_a_description_is_refused() -> None:
    @dataclass(frozen=True)
    class Loose:
        BLOCK: ClassVar[fields.Block] = fields.Block("A block.")
        name: str

    with pytest.raises(TypeError, match=r"Loose\.name is not declared with spec_field"):
        fields.schema(Loose)


def test_example_parses_with_defaults() -> None:
    spec = parse_spec(make_job()["spec"])
    assert spec.storage.mount_path == "/data"
    assert spec.storage.when_deleted == "Retain"
    assert spec.ray.mode == c.MODE_LOCAL
    assert spec.ray.head_group.ports.client == 10001
    assert spec.runner.command == ("dj-runner",)
    assert spec.backoff_limit == 3
    assert spec.suspend is False


def _with(path: str, value: object) -> dict:
    spec = copy.deepcopy(make_job()["spec"])
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return spec


_DELETE = object()

BAD_SPECS = [
    ("recipe", _DELETE, "spec.recipe", "exactly one"),
    ("recipeFrom", {"configMapKeyRef": {"name": "r"}}, "spec.recipe", "exactly one"),
    ("storage", {}, "spec.storage", "exactly one of claimName"),
    ("storage.claimName", "x", "spec.storage", "exactly one of claimName"),
    ("storage.mountPath", "data", "spec.storage.mountPath", "absolute"),
    ("storage.workDir", "../up", "spec.storage.workDir", "without '..'"),
    ("storage.whenDeleted", "Keep", "spec.storage.whenDeleted", "Retain, Delete"),
    ("ray.mode", "slurm", "spec.ray.mode", "local, kuberay, external"),
    ("ray", {"mode": "external"}, "spec.ray.address", "external mode"),
    ("ray", {"mode": "local", "address": "ray://x:1"}, "spec.ray.address", "no address"),
    ("ray", {"workerGroups": [{"name": "w"}]}, "spec.ray.workerGroups", "kuberay"),
    (
        "ray",
        {"mode": "kuberay", "headGroup": {"ports": {"client": 10005}}},
        "spec.ray.headGroup.ports.client",
        "10002-19999",
    ),
    (
        "ray",
        {"mode": "kuberay", "workerGroups": [{"name": "w", "replicas": 5, "maxReplicas": 2}]},
        "spec.ray.workerGroups[0].replicas",
        "maxReplicas",
    ),
    ("backoffLimit", -1, "spec.backoffLimit", ">= 0"),
    ("backoffLimit", "3", "spec.backoffLimit", "an integer"),
    ("suspend", "yes", "spec.suspend", "true or false"),
    ("runner.command", [], "spec.runner.command", "non-empty list"),
    ("activeDeadlineSeconds", 0, "spec.activeDeadlineSeconds", ">= 1"),
    # The CRD's bounds hold at parse time too (an object written under an older CRD).
    ("backoffLimit", 101, "spec.backoffLimit", "<= 100"),
    ("progressDeadlineSeconds", 5, "spec.progressDeadlineSeconds", ">= 10"),
    ("runner.imagePullPolicy", "Sometimes", "spec.runner.imagePullPolicy", "IfNotPresent"),
    ("runner.command", ["a"] * 9, "spec.runner.command", "at most 8"),
    ("runner.metricsPort", 70000, "spec.runner.metricsPort", "0 for none"),
    ("runner.securityContext", "root", "spec.runner.securityContext", "an object"),
    (
        "ray",
        {"mode": "kuberay", "workerGroups": [{"name": "Big_Group"}]},
        "spec.ray.workerGroups[0].name",
        "a DNS label",
    ),
    (
        "ray",
        {"mode": "kuberay", "workerGroups": [{"replicas": 1}]},
        "spec.ray.workerGroups[0].name",
        "a group name",
    ),
    (
        "ray",
        {"mode": "kuberay", "headGroup": {"ports": {"gcs": 8265}}},
        "spec.ray.headGroup.ports",
        "three different ports",
    ),
]


@pytest.mark.parametrize(("path", "value", "field", "expected"), BAD_SPECS)
def test_bad_spec_names_the_field(path: str, value: object, field: str, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_with(path, value))
    assert err.value.field_path == field
    assert expected in str(err.value)


OPS = [{"whitespace_normalization_mapper": None}]
BAD_RECIPES = [
    ({"process": []}, "spec.recipe.process", "non-empty list of ops"),
    ({"dataset_path": "a.jsonl"}, "spec.recipe.export_path", "got None"),
    ({"process": [{"text_lenght_filter": {}}]}, "spec.recipe.process", "text_length_filter"),
    ({"proces": []}, "spec.recipe.proces", "did you mean 'process'"),
    (
        {"process": [{"text_length_filter": {"min_len": "ten"}}]},
        "spec.recipe.process",
        "min_len",
    ),
    ({"dataset_path": "../../etc/x.jsonl"}, "spec.recipe.dataset_path", "stays under /data"),
    ({"export_path": "out/result.exe"}, "spec.recipe.export_path", "ending in"),
]


@pytest.mark.parametrize(("patch", "field", "expected"), BAD_RECIPES)
def test_bad_recipe_is_refused_with_the_runners_message(
    patch: dict, field: str, expected: str
) -> None:
    recipe = {"dataset_path": "in/a.jsonl", "export_path": "out/b.jsonl", "process": OPS}
    recipe.update(patch)
    if patch == {"dataset_path": "a.jsonl"}:
        del recipe["export_path"]
    with pytest.raises(SpecError) as err:
        validate_recipe(recipe, "/data")
    assert err.value.field_path.startswith(field), err.value.field_path
    assert expected in str(err.value)


def test_recipe_paths_resolve_under_the_mount() -> None:
    paths = validate_recipe(
        {"dataset_path": "input/a.jsonl", "export_path": "/abs/out.jsonl", "process": OPS}, "/mnt/x"
    )
    assert paths == {"dataset_path": "/mnt/x/input/a.jsonl", "export_path": "/abs/out.jsonl"}


def test_work_dir_default_and_override() -> None:
    spec = parse_spec(make_job()["spec"])
    assert work_dir_for(spec, "ns1", "demo") == "/data/.datajuicer/ns1/demo"
    spec = parse_spec(_with("storage.workDir", "runs/one"))
    assert work_dir_for(spec, "ns1", "demo") == "/data/runs/one"


def test_examples_parse_and_validate() -> None:
    for path in sorted((ROOT / "examples").glob("job*.yaml")):
        doc = yaml.safe_load(path.read_text())
        spec = parse_spec(doc["spec"])
        if spec.recipe is not None:
            validate_recipe(spec.recipe, spec.storage.mount)
