"""The chart, the CRD, the docs' tables and both sides' code agree with ``dj_runner.contract``."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from dj_operator.status import attempts
from dj_runner import contract
from dj_runner.contract import ExitCode
from dj_runner.observe.k8s_status import to_progress
from dj_runner.observe.status_file import StatusWriter

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "datajuicer-operator"
CRD_NAME = f"{contract.GROUP}_{contract.PLURAL}.yaml"
CRD_FILES = [ROOT / "crds" / CRD_NAME, *sorted((CHART / "crds").glob("*.yaml"))]


def table_after(path: Path, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row is ``header``, as lists of cells."""
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    assert len(starts) == 1, f"{path.name}: expected one table headed {header!r}, got {starts}"
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert rows, f"{path.name}: the table headed {header!r} has no rows"
    return rows


# --------------------------------------------------------------------------- exit codes


def test_each_exit_code_has_one_name_and_a_meaning() -> None:
    assert set(contract.EXIT_MEANINGS) == set(ExitCode)
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    assert all(code.meaning for code in ExitCode)
    assert set(ExitCode) > contract.RETRIED_EXIT_CODES
    assert all(code < contract.SIGNAL_EXIT_BASE for code in ExitCode)


@pytest.mark.parametrize(
    ("doc", "header"),
    [("README.md", "| exit code | meaning |"), ("docs/runner.md", "| code | meaning |")],
)
def test_the_docs_exit_code_tables_are_the_contracts(doc: str, header: str) -> None:
    rows = table_after(ROOT / doc, header)
    documented = {code: meaning for code, meaning, *_ in rows}
    expected = {str(int(code)) for code in ExitCode} | {contract.SIGNAL_EXIT_LABEL}
    assert set(documented) == expected, (
        f"{doc}: codes documented but not in the contract: {set(documented) - expected}; "
        f"in the contract but not documented: {expected - set(documented)}"
    )
    for code in ExitCode:
        assert documented[str(int(code))].startswith(code.meaning), (
            f"{doc}: exit {int(code)} reads {documented[str(int(code))]!r}; "
            f"the contract's meaning is {code.meaning!r}"
        )
    assert documented[contract.SIGNAL_EXIT_LABEL].startswith(contract.SIGNAL_EXIT_MEANING)


def test_the_operator_docs_retry_exactly_the_contracts_retried_codes() -> None:
    rows = table_after(ROOT / "docs" / "operator.md", "| the runner | phase | reason | retried |")
    retried: set[str] = set()
    final: set[str] = set()
    for runner, *_, retry in rows:
        if not runner.startswith("exit "):
            continue
        codes = set(
            re.findall(r"\b\d+\+N\b|(?<![\d+])\d+(?![\d+])", re.sub(r"\(.*?\)", "", runner))
        )
        (retried if retry.startswith("yes") else final).update(codes)
    assert retried == {str(int(c)) for c in contract.RETRIED_EXIT_CODES} | {
        contract.SIGNAL_EXIT_LABEL
    }
    assert final == {str(int(c)) for c in ExitCode if not c.retried}


@pytest.mark.parametrize("code", list(ExitCode))
def test_the_operator_retries_exactly_the_retried_codes(code: ExitCode) -> None:
    outcome = attempts.classify({"exitCode": int(code)}).outcome
    assert (outcome == attempts.RETRYABLE) == code.retried, (code, outcome)


def test_a_signal_exit_is_retried() -> None:
    assert attempts.classify({"exitCode": contract.SIGNAL_EXIT_BASE + 9}).outcome == (
        attempts.RETRYABLE
    )


# --------------------------------------------------------------------------- the CRD


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_crd_has_the_contracts_coordinates(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    spec = doc["spec"]
    assert spec["group"] == contract.GROUP
    assert spec["names"]["kind"] == contract.KIND
    assert spec["names"]["plural"] == contract.PLURAL
    assert doc["metadata"]["name"] == f"{contract.PLURAL}.{contract.GROUP}"
    assert [v["name"] for v in spec["versions"]] == [contract.VERSION]
    assert f"{contract.GROUP}/{contract.VERSION}" == contract.API_VERSION


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_crds_status_progress_is_the_contracts_progress(path: Path) -> None:
    (version,) = yaml.safe_load(path.read_text())["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    progress = status["properties"]["progress"]["properties"]
    assert set(progress) == set(typing.get_type_hints(contract.Progress))
    error = progress["error"]["properties"]
    assert set(error) == set(typing.get_type_hints(contract.ProgressError))
    checkpoint = progress["checkpoint"]["properties"]
    assert set(checkpoint) == set(typing.get_type_hints(contract.ProgressCheckpoint))


# --------------------------------------------------------------------------- the chart


def _template_yaml(name: str) -> dict[str, Any]:
    """A chart template with its template-only lines dropped (enough to read fixed keys)."""
    text = (CHART / "templates" / name).read_text()
    kept = [line for line in text.splitlines() if "{{" not in line and not line.startswith("#")]
    return yaml.safe_load("\n".join(kept))


def test_the_pod_monitor_selects_the_runner_pods_on_the_metrics_port() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["metrics"]["podMonitor"]["port"] == contract.METRICS_PORT_NAME
    template = (CHART / "templates" / "podmonitor.yaml").read_text()
    assert "port: {{ .Values.metrics.podMonitor.port }}" in template
    monitor = _template_yaml("podmonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"] == {
        contract.LABEL_COMPONENT: contract.COMPONENT_RUNNER,
        contract.LABEL_MANAGED_BY: contract.OPERATOR_NAME,
    }


# --------------------------------------------------------------------------- environment, docs


def test_the_operator_docs_name_the_runner_environment() -> None:
    text = (ROOT / "docs" / "operator.md").read_text()
    for name in (
        contract.ENV_JOB_NAME,
        contract.ENV_JOB_NAMESPACE,
        contract.ENV_RAY_MIN_NODES,
        contract.ENV_RAY_CONNECT_TIMEOUT,
    ):
        assert f"`{name}`" in text, name


def test_the_runner_docs_list_the_work_dir_layout() -> None:
    text = (ROOT / "docs" / "runner.md").read_text()
    names = [
        contract.JOB_FILE,
        contract.PLAN_FILE,
        contract.STATUS_FILE,
        contract.RESULT_FILE,
        contract.CLAIMS_DIR + "/",
        contract.LOCK_FILE,
        contract.EVENTS_DIR + "/",
        contract.CHECKPOINTS_DIR + "/",
        contract.GLOBAL_DIR + "/",
        contract.REJECTS_DIR + "/",
    ]
    for name in names:
        assert f"<work_dir>/{name}" in text, name


# --------------------------------------------------------------------------- status shapes


def test_status_json_has_the_contracts_shape(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path, "job", "run-1", None)
    assert set(writer.data) == set(typing.get_type_hints(contract.Status))
    assert writer.data["schema_version"] == contract.STATUS_SCHEMA_VERSION
    for key, shape in (
        ("partitions", contract.PartitionCounts),
        ("samples", contract.SampleCounts),
    ):
        assert set(writer.data[key]) == set(typing.get_type_hints(shape)), key
    writer.finish("succeeded")
    assert writer.data["state"] in contract.RUN_STATES
    assert set(typing.get_args(contract.RunState)) == set(contract.RUN_STATES)


def test_the_runner_docs_status_example_has_the_contracts_keys() -> None:
    text = (ROOT / "docs" / "runner.md").read_text()
    block = text.split("## Live status: status.json", 1)[1].split("```json", 1)[1].split("```")[0]
    example = yaml.safe_load(block)  # JSON is YAML
    assert set(example) == set(typing.get_type_hints(contract.Status))
    assert set(example["stage"]) == set(typing.get_type_hints(contract.Stage))
    assert set(example["resumed"]) == set(typing.get_type_hints(contract.Resumed))
    assert set(example["checkpoint"]) == set(typing.get_type_hints(contract.Checkpoint))


def test_progress_has_the_contracts_shape(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path, "job", "run-1", None)
    writer.update(
        stage={"index": 0, "op": "x", "global": False},
        resumed={"partitions_done": 1, "checkpoints": 2},
        error={"op": "x", "partition": 0, "message": "boom"},
    )
    progress = to_progress(writer.data, "pod-1")
    assert set(progress) == set(typing.get_type_hints(contract.Progress))
    assert set(progress["error"] or {}) == set(typing.get_type_hints(contract.ProgressError))
