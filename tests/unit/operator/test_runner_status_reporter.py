"""The runner's status reporter (`dj_runner.observe.k8s_status`): status.json mapped to
status.progress, changes only, throttled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from dj_runner.observe.k8s_status import ProgressReporter, to_progress
from dj_runner.store.workdir import WorkDir

STATUS = {
    "schema_version": 1,
    "job_id": "demo",
    "run_id": "r1",
    "state": "running",
    "started_at": "2026-11-30T05:12:00.123Z",
    "engine_ready_at": "2026-11-30T05:12:02.500Z",
    "updated_at": "2026-11-30T05:12:09.456Z",
    "finished_at": None,
    "runner_version": "0.1.0",
    "partitions": {"total": 10, "done": 3, "failed": 1, "running": 2},
    "samples": {"in": 1234, "out": 1100, "rejected": 2},
    "stage": {"index": 2, "op": "text_length_filter", "global": False},
    "last_checkpoint_at": "2026-11-30T05:12:09.001Z",
    "estimated_completion_at": "2026-11-30T05:12:31.200Z",
    "resumed": {"partitions_done": 3, "checkpoints": 12},
    "checkpoint": {
        "partitions_committed": 4,
        "partitions_total": 10,
        "ops_done": 3,
        "op": "text_length_filter",
        "at": "2026-11-30T05:12:09.001Z",
    },
    "retries": {"count": 2, "partition": 5, "message": "worker died"},
    "export_path": "/data/out/result.jsonl",
    "error": {"op": "x", "partition": 4, "message": "boom"},
    "a_future_key": [1, 2],
}


def test_to_progress() -> None:
    assert to_progress(STATUS, "demo-runner-1") == {
        "state": "running",
        "runId": "r1",
        "podName": "demo-runner-1",
        "partitionsTotal": 10,
        "partitionsCompleted": 3,
        "partitionsFailed": 1,
        "partitionsRunning": 2,
        "completion": "3/10",
        "percent": 30,
        "samplesIn": 1234,
        "samplesOut": 1100,
        "samplesRejected": 2,
        "currentOp": "text_length_filter",
        "opIndex": 2,
        "lastCheckpointTime": "2026-11-30T05:12:09.001Z",
        "estimatedCompletionTime": "2026-11-30T05:12:31.200Z",
        "engineReadyTime": "2026-11-30T05:12:02.500Z",
        "updateTime": "2026-11-30T05:12:09.456Z",
        "resumedPartitions": 3,
        "resumedCheckpoints": 12,
        "checkpoint": {
            "partitionsCommitted": 4,
            "partitionsTotal": 10,
            "opsDone": 3,
            "op": "text_length_filter",
            "time": "2026-11-30T05:12:09.001Z",
            "summary": "4/10 partitions after op 3 text_length_filter",
        },
        "retries": {"count": 2, "partition": 5, "message": "worker died"},
        "error": {"op": "x", "partition": 4, "message": "boom"},
    }


def test_to_progress_before_the_plan_and_on_a_fresh_run() -> None:
    fresh = {
        **STATUS,
        "partitions": {"total": 0, "done": 0},
        "resumed": None,
        "error": None,
        "stage": None,
    }
    out = to_progress(fresh)
    assert out["completion"] == "0/?" and out["percent"] == 0
    assert out["resumedPartitions"] is None and out["error"] is None and out["currentOp"] is None


class RecordingApi:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def patch(self, progress: dict[str, Any]) -> None:
        self.sent.append(progress)


def test_reporter_patches_changes_only_and_throttles(tmp_path: Path) -> None:
    api = RecordingApi()
    reporter = ProgressReporter(tmp_path, "ns", "demo", min_interval=3600, api=api)
    assert reporter.report_once() is False  # no status.json yet: not started
    WorkDir(tmp_path).status_path.write_text(json.dumps(STATUS))
    assert reporter.report_once() is True
    assert reporter.report_once() is False  # unchanged
    changed = {**STATUS, "partitions": {"total": 10, "done": 4}}
    WorkDir(tmp_path).status_path.write_text(json.dumps(changed))
    assert reporter.report_once() is False  # throttled
    reporter.stop()  # the final report is never throttled
    assert [p["partitionsCompleted"] for p in api.sent] == [3, 4]


def test_reporter_reports_its_own_runs_status_only(tmp_path: Path) -> None:
    """Not the previous run's status.json (before its own run wrote one), nor a newer run's
    (once a newer run superseded its own: a runner cut off with its node that runs on)."""
    api = RecordingApi()
    reporter = ProgressReporter(tmp_path, "ns", "demo", min_interval=0, api=api, run_id="r2")
    WorkDir(tmp_path).status_path.write_text(json.dumps(STATUS))  # run r1's
    assert reporter.report_once() is False
    WorkDir(tmp_path).status_path.write_text(json.dumps({**STATUS, "run_id": "r2"}))
    assert reporter.report_once() is True
    newer = {**STATUS, "run_id": "r3", "partitions": {"total": 10, "done": 9}}
    WorkDir(tmp_path).status_path.write_text(json.dumps(newer))
    reporter.stop()
    assert [(p["runId"], p["partitionsCompleted"]) for p in api.sent] == [("r2", 3)]


def test_the_cli_names_the_run_for_the_executor_and_the_reporter(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """`dj-runner run` picks the run id before it starts reporting: the reporter's run is the
    executor's."""
    from dj_runner import cli
    from dj_runner.observe import k8s_status

    seen: dict[str, Any] = {}

    class Recorder(ProgressReporter):
        def start(self) -> ProgressReporter:
            seen["reporter"] = self.run_id
            return self

    def fake_run(args: Any) -> int:
        seen["args"] = args.run_id
        return 0

    monkeypatch.setattr(k8s_status, "ProgressReporter", Recorder)
    monkeypatch.setattr(cli, "_cmd_run", fake_run)
    # An embedded Ray an earlier test left in this process would make main() end the process
    # (os._exit), and with it the test session.
    monkeypatch.setattr(cli, "_embedded_ray_running", lambda: False)
    monkeypatch.setenv("DJ_JOB_NAME", "demo")
    monkeypatch.setenv("DJ_JOB_NAMESPACE", "ns")
    assert cli.main(["run", "recipe.yaml", "--work-dir", str(tmp_path)]) == 0
    assert seen["reporter"] == seen["args"] and seen["args"]


def test_reporter_survives_api_errors(tmp_path: Path) -> None:
    class Failing:
        def patch(self, progress: dict[str, Any]) -> None:
            raise RuntimeError("apiserver down")

    WorkDir(tmp_path).status_path.write_text(json.dumps(STATUS))
    reporter = ProgressReporter(tmp_path, "ns", "demo", min_interval=0, api=Failing())
    assert reporter.report_once() is False
    assert reporter.patches == 0


def test_the_client_library_is_imported_on_the_starting_thread(tmp_path: Path) -> None:
    """Not on the reporter's thread, where it raced the runner's import of Ray (both import
    `requests`) and left one of them a half-initialised module."""
    code = (
        "import sys\n"
        "from dj_runner.observe.k8s_status import ProgressReporter\n"
        "assert 'requests' not in sys.modules and 'kubernetes' not in sys.modules\n"
        f"reporter = ProgressReporter({str(tmp_path)!r}, 'ns', 'job', poll_interval=3600)\n"
        "reporter.start()\n"
        "assert 'requests' in sys.modules and 'kubernetes.config' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
