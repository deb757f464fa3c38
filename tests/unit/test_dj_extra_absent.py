"""Without the dj extra: only built-in ops, and the error says which extra runs the others."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dj_runner.dj_ops import resolve
from dj_runner.errors import RecipeError
from dj_runner.recipe.parse import build_op


@pytest.fixture
def no_extra(monkeypatch):
    monkeypatch.setattr(resolve, "available", lambda: False)


def test_unknown_op_is_refused_naming_the_extra(no_extra):
    with pytest.raises(RecipeError) as err:
        build_op("clean_html_mapper", {}, "process[3]")
    msg = str(err.value)
    assert "process[3]" in msg and "'clean_html_mapper'" in msg
    assert "pip install 'datajuicer-operator[dj]'" in msg


def test_a_typo_of_a_builtin_still_gets_did_you_mean(no_extra):
    with pytest.raises(RecipeError, match="did you mean 'text_length_filter'"):
        build_op("text_lenght_filter", {}, "process[0]")


def test_choosing_data_juicer_without_the_extra_is_refused(no_extra):
    with pytest.raises(RecipeError, match=r"op_implementation.*datajuicer-operator\[dj\]"):
        build_op("text_length_filter", {"op_implementation": "data_juicer"}, "process[0]")


def test_builtin_ops_never_import_data_juicer():
    code = (
        "import sys; from dj_runner.recipe.parse import parse_recipe; "
        "parse_recipe({'dataset_path': 'a.jsonl', 'export_path': 'b.jsonl', "
        "'process': [{'text_length_filter': {}}, {'document_deduplicator': {}}]}); "
        "print(any(m.startswith('data_juicer') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
