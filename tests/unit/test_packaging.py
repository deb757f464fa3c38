"""Packaging: the runner's runtime dependencies carry nothing of the operator's; all pinned."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def names(reqs: list[str]) -> set[str]:
    return {re.split(r"[\[=<>~ ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_the_runner_does_not_depend_on_the_operators_libraries() -> None:
    base = names(project()["dependencies"])
    assert not base & {"kopf", "kubernetes"}
    assert "prometheus-client" in base  # the runner's own /metrics endpoint
    assert names(project()["optional-dependencies"]["operator"]) == {"kopf", "kubernetes"}
    assert "datajuicer-operator[operator,testtools]" in project()["optional-dependencies"]["test"]


def test_the_dj_extra_is_installed_and_tested_without_the_operator() -> None:
    """tests/dj run in .venv-dj with the dj extra and the test runner only: nothing of the
    operator's (kopf brings aiohttp, which Data-Juicer imports) may stand in for the extra."""
    extras = project()["optional-dependencies"]
    assert names(extras["testtools"]) == {"pytest", "pytest-timeout", "hypothesis"}
    assert "aiohttp==3.14.5" in extras["dj"]  # Data-Juicer 1.6.1 imports it, undeclared
    assert all("==" in r for r in extras["dj"] + extras["testtools"])
    makefile = (PYPROJECT.parent / "Makefile").read_text()
    assert "$(DJ_VENV)/bin/pip install -q -e '.[testtools,dj]'" in makefile
    assert "$(PY) -m venv --clear $(DJ_VENV)" in makefile  # no leftovers of an older install


def test_every_dependency_is_pinned_fasttext_included() -> None:
    reqs = project()["dependencies"] + project()["optional-dependencies"]["operator"]
    assert all("==" in r for r in reqs), reqs
    assert "fasttext-predict==0.9.2.4" in project()["dependencies"]
