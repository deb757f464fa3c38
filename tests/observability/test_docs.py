"""docs/metrics.md lists every metric family, every alert and every Event reason."""

from __future__ import annotations

import threading

import yaml

from dj_operator.events_catalog import CATALOG
from dj_operator.metrics import OperatorMetrics
from dj_runner.observe.event_log import Event
from dj_runner.observe.metrics import RunnerCollector, RunnerFigures

from .conftest import REPO
from .djjobs import djjob
from .test_alert_rules import RULES

DOC = (REPO / "docs" / "metrics.md").read_text()


def _exposed_names(families) -> set[str]:
    names = set()
    for fam in families:
        suffix = "_total" if fam.type == "counter" else ""
        names.add(fam.name + suffix)
    return names


def test_every_runner_metric_is_documented():
    figures = RunnerFigures()
    for kind, fields in (
        ("job_start", {}),
        ("partition_plan_saved", {"total_partitions": 2}),
        ("checkpoint_save", {"duration": 0.1, "checkpoint_bytes": 10}),
    ):
        figures.apply(Event(kind, 1.0, "", "", "j", fields))
    names = _exposed_names(RunnerCollector(figures, threading.Lock(), "ns", "j").collect())
    assert len(names) >= 28
    missing = sorted(n for n in names if f"`{n}`" not in DOC)
    assert not missing, f"not in docs/metrics.md: {missing}"


def test_every_operator_metric_is_documented():
    metrics = OperatorMetrics(handlers=("on_create",))
    metrics.index.upsert(djjob("a", started=1.0, completed=2.0, phase="Failed", failure_reason="X"))
    metrics.api_request("get", 200)
    metrics.event_posted("Normal", "Created")
    metrics.event_suppressed("Created")
    metrics.watch_event()
    names = _exposed_names(metrics.registry.collect())
    assert len(names) >= 25
    missing = sorted(n for n in names if f"`{n}`" not in DOC)
    assert not missing, f"not in docs/metrics.md: {missing}"


def test_every_alert_and_event_reason_is_documented():
    rules = yaml.safe_load(RULES.read_text())
    for alert in (r["alert"] for g in rules["groups"] for r in g["rules"]):
        assert f"`{alert}`" in DOC, alert
    for name, entry in CATALOG.items():
        assert f"| `{name}` | {entry.type} |" in DOC, name
