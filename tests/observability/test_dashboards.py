"""The committed dashboards: generated from code and up to date, well-formed, valid PromQL."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from dj_operator.status import timeline

from .conftest import REPO
from .dashboards import (
    dashboard_files,
    load,
    panel_queries,
    parse_label_values,
    substitute,
    variable_queries,
)

GENERATOR = REPO / "hack" / "gen_dashboards.py"
VALUES = {
    "namespace": "team-a",
    "job": "demo",
    "__rate_interval": "1m",
    "datasource": "prometheus",
}


def test_committed_dashboards_equal_the_generated_ones():
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def test_three_dashboards_with_their_variables():
    titles = {load(p)["title"]: p for p in dashboard_files()}
    assert set(titles) == {"Data-Juicer jobs", "Data-Juicer job", "Data-Juicer operator"}
    job_vars = {v.name for v in variable_queries(titles["Data-Juicer job"])}
    assert job_vars == {"namespace", "job"}
    for path in dashboard_files():
        d = load(path)
        assert d["uid"] and d["uid"].startswith("datajuicer-")
        assert any(v["type"] == "datasource" for v in d["templating"]["list"])
        queries = panel_queries(path)
        assert len(queries) >= 7, f"{path.name}: {len(queries)} panel queries"
        for v in variable_queries(path):
            parse_label_values(v.query)


def test_job_dashboard_covers_what_the_issue_asks():
    job_dashboard = next(p for p in dashboard_files() if p.name == "datajuicer-job.json")
    titles = {q.panel for q in panel_queries(job_dashboard)}
    for wanted in (
        "Progress",
        "ETA",
        "Throughput per op",
        "Drop rate per op",
        "Checkpoint age",
        "Checkpoint write latency",
        "Checkpoint size",
        "Retries and restarts",
        "Failures",
    ):
        assert wanted in titles


def test_fleet_dashboard_shows_every_phase_interval_by_mode_and_quantile():
    fleet = next(p for p in dashboard_files() if p.name == "datajuicer-jobs.json")
    exprs = [q.expr for q in panel_queries(fleet)]
    for interval in timeline.INTERVALS:
        mine = [e for e in exprs if f'interval="{interval}"' in e]
        assert len(mine) == 3, interval
        assert all("sum by (mode, le)" in e for e in mine), interval
        for q in ("0.5", "0.9", "0.99"):
            assert any(e.startswith(f"histogram_quantile({q},") for e in mine), (interval, q)


def test_every_panel_query_is_valid_promql(tmp_path, promtool):
    """promtool parses each expression (as a recording rule) after variable substitution."""
    rules = []
    for path in dashboard_files():
        for i, q in enumerate(panel_queries(path)):
            expr = substitute(q.expr, {**VALUES, "namespace": "team-a|team-b"})
            rules.append({"record": f"panel:{path.stem.replace('-', '_')}:{i}", "expr": expr})
    rule_file = tmp_path / "panels.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_panels_only_use_bounded_labels():
    allowed = {"namespace", "job_name", "op", "phase", "reason", "state", "type", "handler"}
    allowed |= {"code", "kind", "le", "mode"}
    for path in dashboard_files():
        for q in panel_queries(path):
            for group in re.findall(r"by \(([^)]*)\)", q.expr):
                labels = {x.strip() for x in group.split(",")}
                assert labels <= allowed, f"{q.panel}: {labels - allowed}"
