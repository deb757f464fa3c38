"""What a runner pod reports from a work dir in a bucket, on the real S3 server, as the runner pod
of a job with `spec.storage.objectStore` does: the progress reporter
(dj_runner/observe/k8s_status.py) and the metrics endpoint (dj_runner/observe/metrics.py) read
the status.json the runner writes there."""

from __future__ import annotations

from typing import Any

import pytest

from dj_runner.observe.k8s_status import ProgressReporter
from dj_runner.observe.metrics import serve_metrics
from dj_runner.observe.status_file import StatusWriter
from tests.harness.s3server import S3Server
from tests.harness.waiting import wait_for


class RecordingApi:
    """The status subresource's patch, recorded (the reporter's seam for its API client)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def patch(self, progress: dict[str, Any]) -> None:
        self.sent.append(progress)


def test_the_reporter_reads_status_json_from_an_s3_work_dir(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    work_dir = f"s3://{s3_bucket}/work/job-a"
    api = RecordingApi()
    reporter = ProgressReporter(work_dir, "ns", "job-a", min_interval=0, api=api)
    assert reporter.report_once() is False  # no status.json yet
    writer = StatusWriter(work_dir, "job-a", "run-1", f"s3://{s3_bucket}/out.jsonl")
    writer.update(partitions={"total": 4, "done": 1, "running": 2})
    assert reporter.report_once() is True
    (sent,) = api.sent
    assert (sent["partitionsTotal"], sent["partitionsCompleted"]) == (4, 1)
    assert sent["partitionsRunning"] == 2 and sent["runId"] == "run-1"


def test_the_metrics_endpoint_reads_status_json_from_an_s3_work_dir(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    work_dir = f"s3://{s3_bucket}/work/job-b"
    with serve_metrics(work_dir, 0, host="127.0.0.1", run_id="run-1") as handle:
        writer = StatusWriter(work_dir, "job-b", "run-1", f"s3://{s3_bucket}/out.jsonl")
        writer.update(partitions={"total": 5, "done": 2})

        def planned() -> int | None:
            with handle.lock:
                return handle.figures.partitions_planned

        assert wait_for(planned, 30, "the metrics to read the bucket's status.json") == 5
