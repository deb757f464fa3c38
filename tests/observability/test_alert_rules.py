"""The alert rules: valid, and each one fires and clears in promtool's unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from .conftest import REPO

RULES = REPO / "charts" / "datajuicer-operator" / "rules" / "alerts.yaml"
RULES_TEST = Path(__file__).with_name("rules_test.yaml")

EXPECTED_ALERTS = {
    "DataJuicerJobFailed",
    "DataJuicerJobStalled",
    "DataJuicerCheckpointStale",
    "DataJuicerRunnerRestarting",
    "DataJuicerOperatorReconcileErrors",
    "DataJuicerOperatorWatchStale",
}


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_rules_file_is_valid(promtool):
    result = _promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_clears_in_promtool_tests(promtool):
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == EXPECTED_ALERTS
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    for alert in alerts:
        checks = [c for t in cases for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in checks), f"{alert}: no test where it fires"
        assert any(not c["exp_alerts"] for c in checks), f"{alert}: no test where it is quiet"
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    result = _promtool(promtool, "test", "rules", str(RULES_TEST))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
