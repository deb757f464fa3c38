"""The declarative recipe schema: one description drives validation and the OpenAPI export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dj_runner.errors import RecipeError
from dj_runner.recipe.keys import TOP_LEVEL, Key, openapi
from dj_runner.recipe.parse import load_recipe, parse_recipe

BASE = {"dataset_path": "d.jsonl", "export_path": "o.jsonl", "process": ["fix_unicode_mapper"]}


def error(**changes) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe({**BASE, **changes})
    return str(info.value)


def test_error_style_is_unchanged():
    assert error(partition_sise=10) == (
        "recipe key 'partition_sise': got 10; expected a known recipe key "
        "(did you mean 'partition_size'?)"
    )
    assert "did you mean 'n_ops'" in error(checkpoint={"n_op": 2})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_partition_size_mb", float("inf")),
        ("max_partition_size_mb", float("nan")),
        ("retry_base_delay_s", float("nan")),
        ("event_logging", {"max_log_size_mb": float("inf")}),
        ("partition", {"target_size_mb": float("-inf")}),
    ],
)
def test_non_finite_numbers_are_refused(key, value):  # m2
    assert "a finite number" in error(**{key: value})


def test_non_finite_op_parameters_are_refused():  # m2
    msg = error(process=[{"alphanumeric_filter": {"min_ratio": float("nan")}}])
    assert "process[0].alphanumeric_filter.min_ratio" in msg and "finite" in msg


@pytest.mark.parametrize("op", ["clean_email_mapper", "clean_links_mapper", "clean_ip_mapper"])
def test_invalid_regex_parameters_are_refused_at_load(op):  # M10
    msg = error(process=[{op: {"pattern": "("}}])
    assert f"'process[0].{op}.pattern'" in msg and "valid Python regular expression" in msg
    msg = error(process=[{op: {"pattern": "(a)", "repl": "\\2"}}])
    assert f"'process[0].{op}.repl'" in msg and "invalid group reference" in msg
    parse_recipe({**BASE, "process": [{op: {"pattern": "r'(a)'", "repl": "\\1"}}]})


def test_text_keys_default_and_forms():
    assert parse_recipe(BASE).text_keys == ("text",)
    assert parse_recipe({**BASE, "text_keys": "body"}).text_keys == ("body",)
    assert parse_recipe({**BASE, "text_keys": ["a", "b"]}).text_keys == ("a", "b")
    assert "'text_keys[1]'" in error(text_keys=["a", 3])


def test_a_recipe_file_that_is_not_utf8_is_a_clear_error(tmp_path):  # m1
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"# caf\xe9\ndataset_path: d.jsonl\n")
    with pytest.raises(RecipeError, match=r"UTF-8 text file.*line 1"):
        load_recipe(path)


def test_recipe_validation_imports_no_op_implementation():
    code = (
        "import sys, dj_runner.recipe.parse, dj_runner.recipe.keys as s;"
        "s.openapi(ops=False);"
        "print(sorted(m for m in sys.modules if m.startswith(('pyarrow', 'ftfy', 'ray'))"
        " or m.startswith('dj_runner.ops.') and m not in ('dj_runner.ops.common', 'dj_runner.ops.common.params')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _walk(schema: dict, path: str = "recipe"):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_openapi_is_structural_and_matches_the_schema():
    schema = openapi()
    json.dumps(schema)  # plain JSON
    for path, node in _walk(schema):
        # structural: every node has a type, or preserves unknown fields explicitly
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for junctor in ("anyOf", "allOf", "oneOf"):
            for sub in node.get(junctor, []):
                assert "default" not in sub and "description" not in sub, path
    props = schema["properties"]
    assert schema["required"] == ["dataset_path", "export_path", "process"]
    assert props["partition_size"] == {
        "description": "max samples per partition",
        "type": "integer",
        "minimum": 1,
        "default": 10000,
    }
    assert props["checkpoint"]["properties"]["strategy"]["enum"] == [
        "every_op",
        "every_n_ops",
        "manual",
        "disabled",
    ]
    ops = props["process"]["items"]["properties"]
    assert ops["text_length_filter"]["properties"]["min_len"]["type"] == "integer"
    assert "regular expression" in ops["clean_email_mapper"]["properties"]["pattern"]["description"]
    assert {k.name for k in TOP_LEVEL} <= set(props)
    # Data-Juicer's keys without effect are kept (not pruned), so the runner names them
    assert "partition_dir" in props
    assert "write_partitions" in props["intermediate_storage"]["properties"]


def test_every_key_is_documented_in_docs_recipes():
    doc = (Path(__file__).parents[2] / "docs" / "recipes.md").read_text()

    def names(keys: tuple[Key, ...], prefix: str = ""):
        for k in keys:
            if k.block:
                yield from names(k.block, f"{k.name}.")
            else:
                yield prefix + k.name

    missing = [n for n in names(TOP_LEVEL) if f"`{n}`" not in doc]
    assert missing == []
