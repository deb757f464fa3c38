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
    assert "datajuicer-operator[operator]" in project()["optional-dependencies"]["test"]


def test_every_dependency_is_pinned_fasttext_included() -> None:
    reqs = project()["dependencies"] + project()["optional-dependencies"]["operator"]
    assert all("==" in r for r in reqs), reqs
    assert "fasttext-predict==0.9.2.4" in project()["dependencies"]
