"""Rendering the Helm chart in tests: `helm template` with values, parsed into objects."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.harness.binaries import REPO_ROOT, tool

CHART = REPO_ROOT / "charts" / "datajuicer-operator"
TOP_LEVEL_CRD = REPO_ROOT / "crds" / "datajuicer.io_datajuicerjobs.yaml"
CHART_CRD = CHART / "crds" / "datajuicer.io_datajuicerjobs.yaml"
Obj = dict[str, Any]

# Non-default values that switch every optional part on and the RBAC to namespaced Roles.
NAMESPACED_FULL: Obj = {
    "watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]},
    "image": {"repository": "example.org/dj/datajuicer-operator", "tag": "1.2.3"},
    "runner": {"image": {"repository": "example.org/dj/runner", "tag": "9.9"}},
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
    },
    "dashboards": {"enabled": True},
    "operator": {"metricsPort": 9100, "livenessPort": 9101},
}


def helm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def values_file(directory: Path, values: Mapping[str, Any]) -> Path:
    path = directory / "values.json"
    path.write_text(json.dumps(values))
    return path


def render(
    directory: Path,
    values: Mapping[str, Any] | None = None,
    release: str = "dj",
    namespace: str = "dj-system",
    include_crds: bool = False,
) -> tuple[str, list[Obj]]:
    """`helm template` of the chart: the YAML text and its objects (fails the test on error)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if values:
        args += ["--values", str(values_file(directory, values))]
    if include_crds:
        args.append("--include-crds")
    result = helm(*args)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return result.stdout, objects


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def only(objects: list[Obj], kind: str) -> Obj:
    found = find(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]
