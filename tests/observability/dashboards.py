"""The committed dashboards as data: each panel's PromQL and each variable's query."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tests.harness.waiting import WaitTimeout, wait_for

from .conftest import REPO
from .prometheus import Prometheus

DASHBOARD_DIR = REPO / "charts" / "datajuicer-operator" / "dashboards"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str


@dataclass(frozen=True)
class VariableQuery:
    dashboard: str
    name: str
    query: str


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def panel_queries(path: Path) -> list[PanelQuery]:
    d = load(path)
    return [
        PanelQuery(d["title"], p["title"], t["expr"])
        for p in _panels(d)
        for t in p.get("targets", [])
        if t.get("expr")
    ]


def variable_queries(path: Path) -> list[VariableQuery]:
    d = load(path)
    out = []
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]
        out.append(VariableQuery(d["title"], v["name"], q["query"] if isinstance(q, dict) else q))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable substitution: ``$name`` and ``${name}``, longest names first."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"unsubstituted variables {left} in {expr}"
    return expr


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """``label_values(metric{...}, label)`` as (match, label)."""
    m = LABEL_VALUES.match(query.strip())
    assert m, f"variable query {query!r} is not label_values(...)"
    return m.group("match"), m.group("label")


def panels_without_data(
    prom: Prometheus, values: dict[str, str], fleet_namespaces: str
) -> list[str]:
    """Every panel query (variables substituted) that returns no finite value now."""
    missing = []
    for path in dashboard_files():
        here = dict(values)
        if path.name == "datajuicer-jobs.json":  # the fleet's namespace is a multi-select
            here["namespace"] = fleet_namespaces
        for q in panel_queries(path):
            expr = substitute(q.expr, here)
            if not prom.finite_values(expr):
                missing.append(f"{q.dashboard} / {q.panel}: {expr}")
    return missing


def wait_every_panel_has_data(
    prom: Prometheus, values: dict[str, str], fleet_namespaces: str, timeout: float = 60
) -> None:
    """Wait until every panel returns data; fail naming the panels that do not."""
    missing: list[str] = []

    def all_have_data() -> bool:
        missing[:] = panels_without_data(prom, values, fleet_namespaces)
        return not missing

    try:
        wait_for(all_have_data, timeout=timeout, what="every dashboard panel to return data")
    except WaitTimeout:
        raise AssertionError("panels without data:\n" + "\n".join(missing)) from None
