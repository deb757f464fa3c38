"""What users read about a job agrees, wherever they read it: `kubectl describe djjob` and
`dj-runner status` on the job's work dir show the same progress, ETA, last checkpoint and
restarts, while the job runs (held at a gate the test opens), after its runner was killed, and
once it has ended. And a job of 1,000 partitions with 50 partition failures posts a handful of
Events: transitions only, the partition detail stays in the event log and the metrics."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dj_runner.store.workdir import WorkDir
from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.operator_support import (
    OperatorProcess,
    apply,
    data_config_map,
    events,
    example_job,
    job_obj,
    numbered_rows,
    operator,
    wait_condition,
    with_test_ops,
)

pytestmark = pytest.mark.k8s
__all__ = ["operator"]
Obj = dict[str, Any]
RUNNER_BIN = Path(sys.executable).parent / "dj-runner"

# `kubectl describe` field (under Status/Progress) -> the same fact in `dj-runner status --json`.
PROGRESS_FIELDS = {
    "Partitions Total": ("partitions", "total"),
    "Partitions Completed": ("partitions", "done"),
    "Partitions Failed": ("partitions", "failed"),
    "Samples In": ("samples", "in"),
    "Samples Out": ("samples", "out"),
    "Samples Rejected": ("samples", "rejected"),
    "Last Checkpoint Time": ("last_checkpoint_at",),
    "Estimated Completion Time": ("estimated_completion_at",),
    "Run Id": ("run_id",),
}


def describe(cluster: Cluster, namespace: str, name: str) -> str:
    return cluster.kubectl("describe", "djjob", name, "-n", namespace).stdout


SECTIONS = ("Name", "Namespace", "Labels", "Annotations", "API Version", "Kind", "Metadata")
SECTIONS += ("Spec", "Status", "Events")
KEY = re.compile(r"^( *)([A-Z][A-Za-z ]*):(?: +(.*))?$")


def parse_describe(text: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(Status/Progress fields, top-level Status fields, Event reasons) of a describe output.
    Lines that are not `Key: value` at a known depth (a long message's continuation) are
    skipped."""
    progress: dict[str, str] = {}
    top: dict[str, str] = {}
    reasons: list[str] = []
    section = sub = ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if m is None:
            continue
        indent, key, value = len(m.group(1)), m.group(2), (m.group(3) or "").strip()
        if indent == 0 and key in SECTIONS:
            section = key
            if section == "Events":
                # A header row, a dashes row, then "Type Reason Age From Message" rows.
                reasons = [row.split()[1] for row in lines[i + 3 :] if len(row.split()) > 1]
                break
        elif section == "Status" and indent == 2:
            top[key], sub = value, key
        elif section == "Status" and indent == 4 and sub == "Progress":
            progress[key] = value
    return progress, top, reasons


def runner_status(work_dir: Path) -> Obj:
    out = subprocess.run(
        [str(RUNNER_BIN), "status", "--json", str(work_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def assert_agree(cluster: Cluster, namespace: str, name: str, work_dir: Path) -> Obj:
    """Describe the job and read its work dir; every shared fact must be equal. Returns the
    runner's status."""
    st = runner_status(work_dir)
    progress, top, _ = parse_describe(describe(cluster, namespace, name))
    for field, path in PROGRESS_FIELDS.items():
        value: Any = st
        for key in path:
            value = (value or {}).get(key)
        shown = progress.get(field)
        if value is None:
            assert shown is None, f"describe shows {field}: {shown}; dj-runner status has none"
        else:
            assert shown == str(value), f"{field}: describe {shown!r}, dj-runner status {value!r}"
    assert top["Restarts"] == str(st["restarts"]), (top, st["restarts"])
    return st


def assert_resume_point(cluster: Cluster, namespace: str, summary: str) -> None:
    """`kubectl describe` and `kubectl get -o wide` say where a resume starts."""
    shown = describe(cluster, namespace, "demo")
    assert re.search(rf"Summary: +{re.escape(summary)}$", shown, re.MULTILINE), shown
    wide = cluster.kubectl("get", "djjob", "demo", "-n", namespace, "-o", "wide").stdout
    assert "CHECKPOINT" in wide.splitlines()[0] and summary in wide, wide


def reporter_caught_up(cluster: Cluster, namespace: str, name: str, work_dir: Path) -> bool:
    """The job's status.progress is the runner's latest status.json."""
    st = runner_status(work_dir)
    progress = (job_obj(cluster, namespace, name).get("status") or {}).get("progress") or {}
    return progress.get("updateTime") == st.get("updated_at")


def test_describe_and_dj_runner_status_agree_while_running_after_a_restart_and_at_the_end(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    data = numbered_rows(100, "HOLD", at=[99])  # the last partition waits at the gate
    apply(k8s_cluster, namespace, data_config_map("demo-data", {"demo.jsonl": data}))
    gate = tmp_path / "gate"
    gate.mkdir()
    job = example_job()
    recipe = job["spec"]["recipe"]
    recipe["partition_size"] = 10
    recipe["process"] = [
        {"whitespace_normalization_mapper": {}},
        {"gate_mapper": {"marker": "HOLD", "state_dir": str(gate)}},
        {"text_length_filter": {"min_len": 10}},
    ]
    apply(k8s_cluster, namespace, with_test_ops(job))
    work = k8s_cluster.node.pvc_dir(namespace, "demo-data") / ".datajuicer" / namespace / "demo"

    def held(run_id: str | None = None) -> bool:
        st = runner_status(work) if WorkDir(work).status_path.exists() else {}
        parts = st.get("partitions") or {}
        return (
            st.get("state") == "running"
            and parts.get("done") == 9
            and parts.get("running") == 1
            and (run_id is None or st.get("run_id") != run_id)
            and reporter_caught_up(k8s_cluster, namespace, "demo", work)
        )

    # Running, held at the gate: nine partitions done, one waiting; the ETA is known.
    wait_for(held, 240, "the job held at the gate, its progress reported", interval=0.5)
    first = assert_agree(k8s_cluster, namespace, "demo", work)
    assert first["estimated_completion_at"] and first["restarts"] == 0
    assert_resume_point(k8s_cluster, namespace, "9/10 partitions after op 3 text_length_filter")

    # The runner killed: the next attempt resumes; both say one restart.
    k8s_cluster.node.kill_pod_process(namespace, "demo-runner-1", signal.SIGKILL)
    wait_for(
        lambda: held(first["run_id"]), 240, "the second attempt held at the gate", interval=0.5
    )
    second = assert_agree(k8s_cluster, namespace, "demo", work)
    assert second["restarts"] == 1 and second["resumed"]["partitions_done"] == 9
    assert second["estimated_completion_at"] is None  # this run has finished nothing yet
    # Where a resume starts, found by the new attempt in the work dir before it did anything.
    assert_resume_point(k8s_cluster, namespace, "9/10 partitions after op 3 text_length_filter")

    (gate / "open").touch()
    wait_condition(k8s_cluster, namespace, "demo", "Succeeded", timeout=240)
    wait_for(
        lambda: reporter_caught_up(k8s_cluster, namespace, "demo", work),
        60,
        "the final progress reported",
    )
    final = assert_agree(k8s_cluster, namespace, "demo", work)
    assert final["state"] == "succeeded" and final["partitions"]["done"] == 10
    _, top, reasons = parse_describe(describe(k8s_cluster, namespace, "demo"))
    assert top["Phase"] == "Succeeded"
    assert {"Created", "Started", "Retrying", "Resumed", "Succeeded"} <= set(reasons), reasons


def test_1000_partitions_with_50_failures_post_a_handful_of_events(
    k8s_cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    # One row in every 20th partition of two rows fails.
    data = numbered_rows(2000, "FAIL-ME", at=range(1, 2000, 40))
    apply(k8s_cluster, namespace, data_config_map("demo-data", {"demo.jsonl": data}))
    state = tmp_path / "flaky"
    state.mkdir()
    job = example_job()
    recipe = job["spec"]["recipe"]
    recipe.update(partition_size=2, max_retries=0, retry_base_delay_s=0, max_failed_partitions=50)
    recipe["process"] = [
        {"flaky_mapper": {"marker": "FAIL-ME", "state_dir": str(state)}},
        {"text_length_filter": {"min_len": 10}},
    ]
    apply(k8s_cluster, namespace, with_test_ops(job))
    done = wait_condition(k8s_cluster, namespace, "demo", "Finished", timeout=420)
    assert done["status"]["phase"] == "PartiallySucceeded", done["status"]
    work = k8s_cluster.node.pvc_dir(namespace, "demo-data") / ".datajuicer" / namespace / "demo"
    wait_for(lambda: reporter_caught_up(k8s_cluster, namespace, "demo", work), 60, "progress")
    st = assert_agree(k8s_cluster, namespace, "demo", work)
    assert st["partitions"] == {"total": 1000, "done": 950, "failed": 50, "running": 0}
    posted = events(k8s_cluster, namespace, "demo")
    # The figure docs/metrics.md states: 4 Event objects; the 50 failed partitions are one
    # PartitionsFailed, raised at 1, 2, 4, ... failures the reconciles saw (at most 6 for 50).
    assert sorted(e["reason"] for e in posted) == [
        "Created",
        "PartiallySucceeded",
        "PartitionsFailed",
        "Started",
    ]
    failed = next(e for e in posted if e["reason"] == "PartitionsFailed")
    assert 1 <= (failed.get("count") or 1) <= 6
    assert sum(e.get("count") or 1 for e in posted if e is not failed) == 3
