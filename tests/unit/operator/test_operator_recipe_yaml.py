"""spec.recipeYAML: a Data-Juicer recipe as text, so `kubectl apply -f` keeps its bare
`- op_name:` items (client-side apply drops the nulls of the structured spec.recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dj_operator.api.crd import crd
from dj_operator.api.types import BUILTIN_DEFAULTS, SpecError, parse_spec
from dj_operator.api.validation import validate_recipe
from dj_operator.build.children import recipe_config_map
from dj_operator.handlers.reconcile import read_recipe, recipe_field
from dj_runner.recipe.parse import parse_recipe

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "job-recipe-yaml.yaml"


def _nulls(node: Any, path: str = "") -> list[str]:
    """Where the manifest holds a null (what client-side `kubectl apply` would drop)."""
    if node is None:
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _nulls(v, f"{path}[{i}]")]
    return []


def test_the_example_keeps_bare_op_items_through_kubectl_apply() -> None:
    job = yaml.safe_load(EXAMPLE.read_text())
    assert _nulls(job) == []  # nothing for client-side apply to drop
    assert "  - whitespace_normalization_mapper:\n" in job["spec"]["recipeYAML"]
    spec = parse_spec(job["spec"], BUILTIN_DEFAULTS)
    assert spec.recipe is None and spec.recipe_from is None
    assert recipe_field(spec) == "spec.recipeYAML"
    recipe, missing = read_recipe(None, job, spec)
    assert missing is None and recipe is not None
    assert recipe["process"][0] == {"whitespace_normalization_mapper": None}
    paths = validate_recipe(recipe, spec.storage.mount_path, "spec.recipeYAML")
    assert paths["dataset_path"] == "/data/input/demo.jsonl"
    # The runner gets the recipe as YAML in the job's ConfigMap, its bare items intact.
    job["metadata"].update(namespace="ns", uid="u-1")
    cm = recipe_config_map(job, recipe)
    (text,) = cm["data"].values()
    runner_recipe = parse_recipe(yaml.safe_load(text))
    assert [s.name for s in runner_recipe.process][:2] == [
        "whitespace_normalization_mapper",
        "punctuation_normalization_mapper",
    ]


def test_the_same_recipe_structured_loses_its_ops_to_null_dropping() -> None:
    """Why the text form exists: dropping the nulls (as client-side apply does) leaves empty
    op items in spec.recipe, which the CRD refuses (minProperties 1)."""
    recipe = yaml.safe_load(yaml.safe_load(EXAMPLE.read_text())["spec"]["recipeYAML"])
    dropped = [{k: v for k, v in op.items() if v is not None} for op in recipe["process"]]
    assert dropped[0] == {}
    items = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["recipe"]["properties"]["process"]["items"]
    assert items["minProperties"] == 1


def _spec(**recipe_fields: Any) -> dict[str, Any]:
    return {"storage": {"claimName": "c"}, **recipe_fields}


TEXT = "dataset_path: a.jsonl\nexport_path: b.jsonl\nprocess:\n  - text_length_filter:\n"


@pytest.mark.parametrize(
    "fields",
    [
        {"recipe": {"process": []}, "recipeYAML": TEXT},
        {"recipeYAML": TEXT, "recipeFrom": {"configMapKeyRef": {"name": "r"}}},
        {},
    ],
)
def test_exactly_one_recipe_source(fields: dict[str, Any]) -> None:
    with pytest.raises(
        SpecError, match=r"exactly one of spec\.recipe, spec\.recipeYAML and spec\.recipeFrom"
    ):
        parse_spec(_spec(**fields), BUILTIN_DEFAULTS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("process: [unclosed", "valid YAML"), ("- just\n- a list\n", "a YAML mapping")],
)
def test_bad_recipe_text_is_named(text: str, expected: str) -> None:
    job = {"metadata": {"namespace": "ns"}}
    spec = parse_spec(_spec(recipeYAML=text), BUILTIN_DEFAULTS)
    with pytest.raises(SpecError, match=expected) as err:
        read_recipe(None, job, spec)
    assert "spec.recipeYAML" in str(err.value)


def test_the_crd_has_the_text_field_and_the_one_of_rule() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    field = spec["properties"]["recipeYAML"]
    assert field["type"] == "string" and field["maxLength"] == 262144
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("has(self.recipeYAML)" in r and ".size() == 1" in r for r in rules)
