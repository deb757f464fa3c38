"""Registry: every text op is registered under its module name, once, and rejects unknown params."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from dj_runner.ops.common import registry
from dj_runner.ops.common.base import Deduplicator, Filter, Mapper

OPS_DIR = Path(registry.__file__).parent.parent

MAPPERS = [
    "whitespace_normalization_mapper",
    "punctuation_normalization_mapper",
    "clean_email_mapper",
    "clean_links_mapper",
    "clean_ip_mapper",
    "fix_unicode_mapper",
    "remove_specific_chars_mapper",
]
FILTERS = [
    "words_num_filter",
    "alphanumeric_filter",
    "character_repetition_filter",
    "word_repetition_filter",
    "special_characters_filter",
    "average_line_length_filter",
    "maximum_line_length_filter",
    "language_id_score_filter",
]
DEDUPLICATORS = ["document_deduplicator"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [(n, Mapper) for n in MAPPERS]
    + [(n, Filter) for n in FILTERS]
    + [(n, Deduplicator) for n in DEDUPLICATORS],
)
def test_op_is_registered_with_its_kind(name: str, kind: type) -> None:
    cls = registry.get_op(name)
    assert issubclass(cls, kind)
    assert cls.name == name
    assert cls.__module__ == f"dj_runner.ops.{name}"


def _registered_names(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register":
            arg = node.args[0]
            assert isinstance(arg, ast.Constant)
            names.append(arg.value)
    return names


def test_each_op_module_registers_exactly_one_op_named_after_it() -> None:
    modules = [p for p in OPS_DIR.glob("*.py") if not p.stem.startswith("_")]
    assert {p.stem for p in modules} >= set(MAPPERS + FILTERS + DEDUPLICATORS)
    for path in modules:
        assert _registered_names(path) == [path.stem], path.name
    for helper in (OPS_DIR / "common").glob("*.py"):
        assert _registered_names(helper) == [], helper.name


@pytest.mark.parametrize("name", MAPPERS + FILTERS + DEDUPLICATORS)
def test_unknown_param_fails(name: str) -> None:
    cls = registry.get_op(name)
    with pytest.raises(TypeError):
        cls(no_such_param=1)


@pytest.mark.parametrize("name", MAPPERS + FILTERS + DEDUPLICATORS)
def test_ops_are_frozen_and_keyword_only(name: str) -> None:
    cls = registry.get_op(name)
    op = cls()
    fields = dataclasses.fields(op)
    assert all(f.kw_only for f in fields)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(op, fields[0].name, None)


def test_filters_declare_stats_types() -> None:
    import pyarrow as pa

    expected = {
        "words_num_filter": {"num_words": pa.int64()},
        "alphanumeric_filter": {"alnum_ratio": pa.float64()},
        "character_repetition_filter": {"char_rep_ratio": pa.float64()},
        "word_repetition_filter": {"word_rep_ratio": pa.float64()},
        "special_characters_filter": {"special_char_ratio": pa.float64()},
        "average_line_length_filter": {"avg_line_length": pa.float64()},
        "maximum_line_length_filter": {"max_line_length": pa.int64()},
        "language_id_score_filter": {"lang": pa.string(), "lang_score": pa.float64()},
    }
    for name, types in expected.items():
        assert registry.get_op(name).stats_types == types


def test_a_recipe_loads_only_the_op_modules_it_names(tmp_path: Path) -> None:
    # A fresh interpreter: this one has every op imported by the tests above.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "dataset_path: in.jsonl\nexport_path: out.jsonl\nprocess:\n  - text_length_filter:\n"
    )
    code = (
        "import sys\n"
        "from dj_runner.recipe.parse import load_recipe\n"
        f"load_recipe({str(recipe)!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('dj_runner.ops.')"
        " and not m.startswith('dj_runner.ops.common') and m != 'dj_runner.ops._kernels'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['dj_runner.ops.text_length_filter']"
    assert registry.find_op("no_such_op") is None
