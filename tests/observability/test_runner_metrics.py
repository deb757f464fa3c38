"""The runner's /metrics endpoint on a real job run on an embedded Ray."""

from __future__ import annotations

import json

import pytest

from dj_runner.engine.executor import Executor
from dj_runner.observe.event_log import Event, read_events
from dj_runner.observe.k8s_status import to_progress
from dj_runner.observe.metrics import RunnerFigures, serve_metrics
from dj_runner.observe.report import status
from dj_runner.store.workdir import WorkDir
from tests.harness.waiting import wait_for

from .conftest import promtool_check_metrics
from .jobs import OPS, run_job, small_job
from .scrape import scrape

pytestmark = pytest.mark.usefixtures("ray_session")


def _commit_bytes(work_dir) -> int:
    """Bytes of every checkpoint committed, from the partitions' commit records."""
    total = 0
    for commits in WorkDir(work_dir).checkpoints_dir.glob("p*/commits.jsonl"):
        for line in commits.read_text().splitlines():
            total += json.loads(line)["bytes"]
    return total


def _drained(handle, work_dir):
    """The scrape once the follower has read every event this run logged."""
    n_events = len(read_events(WorkDir(work_dir).events_dir, since=handle.figures.since))

    def caught_up():
        s = scrape(handle.url)
        return s if s.total("datajuicer_runner_events_total") == n_events else None

    return wait_for(caught_up, timeout=30, what=f"the metrics to count all {n_events} events")


def test_runner_metrics_on_a_real_job(tmp_path, promtool):
    job = small_job(tmp_path)
    with serve_metrics(job.work_dir, 0, host="127.0.0.1", namespace="team-a") as handle:
        result = run_job(job)
        assert result.exit_code == 0, result.error
        s = _drained(handle, job.work_dir)

    labels = {"namespace": "team-a", "job_name": "metrics-demo"}
    assert s.value("datajuicer_runner_phase", phase="succeeded", **labels) == 1
    assert s.value("datajuicer_runner_phase", phase="running", **labels) == 0
    assert s.value("datajuicer_runner_partitions_planned", **labels) == 6  # ceil(201 / 37)
    assert s.value("datajuicer_runner_partitions_completed_total", **labels) == 6
    assert s.value("datajuicer_runner_partitions_retried_total", **labels) == 1
    assert s.value("datajuicer_runner_partitions_failed_total", **labels) == 0
    # Resumed from a checkpoint: all 6 after the deduplicator's barrier (they continue from
    # their hashed checkpoints) plus the retried partition, which restarts after its first op.
    assert s.value("datajuicer_runner_partitions_resumed_total", **labels) == 7
    # Read: every row and byte of the input exactly once (the retry resumed from a checkpoint).
    assert s.value("datajuicer_runner_input_samples_total") == 201
    assert s.value("datajuicer_runner_input_bytes_total") == job.dataset.stat().st_size
    # Per op: mappers keep every sample, the filter and the deduplicator drop some.
    assert s.label_values("datajuicer_runner_op_input_samples_total", "op") == set(OPS)
    assert s.value("datajuicer_runner_op_input_samples_total", op=OPS[0]) == 201
    assert s.value("datajuicer_runner_op_dropped_samples_total", op=OPS[0]) == 0
    assert s.value("datajuicer_runner_op_dropped_samples_total", op="text_length_filter") > 0
    dedup_out = s.value("datajuicer_runner_op_output_samples_total", op="document_deduplicator")
    assert dedup_out == result.rows_out
    assert s.value("datajuicer_runner_exported_samples_total") == result.rows_out
    assert s.value("datajuicer_runner_output_samples_total") == result.rows_out
    assert s.value("datajuicer_runner_op_failures_total", op="flaky_mapper") == 1
    # Op durations: one observation per op and partition, in seconds.
    assert s.value("datajuicer_runner_op_duration_seconds_count", op=OPS[0]) == 6
    assert 0 < s.value("datajuicer_runner_op_duration_seconds_sum", op=OPS[0]) < 60
    # Checkpoints: the bytes the commit records hold, each write timed.
    written = s.value("datajuicer_runner_checkpoints_written_total")
    assert written == len(
        read_events(WorkDir(job.work_dir).events_dir, event_type="checkpoint_save")
    )
    assert s.value("datajuicer_runner_checkpoint_written_bytes_total") == _commit_bytes(
        job.work_dir
    )
    assert s.value("datajuicer_runner_checkpoint_size_bytes_count") == written
    assert s.value("datajuicer_runner_checkpoint_write_duration_seconds_count") == written
    assert s.value("datajuicer_runner_last_checkpoint_timestamp_seconds") > 0
    assert s.value("datajuicer_runner_events_total", type="job_start") == 1

    check = promtool_check_metrics(promtool, s.text)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_a_resumed_run_counts_only_its_own_events(tmp_path):
    job = small_job(tmp_path)
    assert run_job(job).exit_code == 0
    with serve_metrics(job.work_dir, 0, host="127.0.0.1") as handle:
        assert run_job(job).exit_code == 0  # everything is done: it resumes and exports
        s = _drained(handle, job.work_dir)
    # job_name falls back to the job id the log reports.
    assert s.value("datajuicer_runner_events_total", type="job_restart") == 1
    assert s.value("datajuicer_runner_events_total", type="job_start") is None
    assert s.value("datajuicer_runner_partitions_started_total", job_name="metrics-demo") == 0
    assert s.value("datajuicer_runner_checkpoints_written_total") == 0
    assert s.value("datajuicer_runner_phase", phase="succeeded") == 1


@pytest.mark.parametrize(
    "event_logging",
    [{"log_level": "WARNING"}, {"enabled": False}],
    ids=["log-level-warning", "event-log-off"],
)
def test_progress_figures_do_not_depend_on_the_event_log(tmp_path, event_logging):
    """Phase, job name and partitions come from status.json, which is always written."""
    job = small_job(tmp_path, event_logging=event_logging)
    executor = Executor(job.recipe, work_dir=job.work_dir, job_id="quiet-job")
    with serve_metrics(job.work_dir, 0, host="127.0.0.1", run_id=executor.run_id) as handle:
        result = executor.run()
        assert result.exit_code == 0, result.error

        def settled():
            s = scrape(handle.url)
            return s if s.value("datajuicer_runner_phase", phase="succeeded") == 1 else None

        s = wait_for(settled, timeout=30, what="the metrics to show the job succeeded")
    labels = {"job_name": "quiet-job"}
    assert s.value("datajuicer_runner_phase", phase="starting", **labels) == 0
    assert s.value("datajuicer_runner_partitions_planned", **labels) == 6
    assert s.value("datajuicer_runner_partitions_completed_total", **labels) == 6
    assert s.value("datajuicer_runner_partitions_failed_total", **labels) == 0
    assert s.value("datajuicer_runner_start_timestamp_seconds", **labels) > 0
    assert s.value("datajuicer_runner_last_checkpoint_timestamp_seconds", **labels) > 0
    # `dj-runner status` and the DataJuicerJob's status.progress read the same file.
    st = status(job.work_dir)
    assert st["state"] == "succeeded" and st["partitions"]["done"] == 6
    progress = to_progress(st)
    assert progress["partitionsCompleted"] == 6 and progress["samplesOut"] == result.rows_out
    if event_logging.get("enabled") is False:
        assert read_events(job.work_dir / "events") == []


def test_status_figures_only_move_the_phase_forward():
    figures = RunnerFigures(since=0.0)
    running = {
        "job_id": "j",
        "state": "running",
        "started_at": "2026-01-01T00:00:00.000Z",
        "partitions": {"total": 4, "done": 3, "failed": 0},
        "resumed": {"partitions_done": 1},
    }
    figures.apply_status(running)
    assert (figures.phase, figures.job_id, figures.partitions_planned) == ("running", "j", 4)
    assert figures.partition_count("completed") == 2  # one was finished by an earlier run
    figures.partitions["completed"] = 3  # the events counted more: the counter keeps them
    figures.apply_status({**running, "state": "succeeded"})
    assert figures.phase == "succeeded" and figures.partition_count("completed") == 3
    figures.apply_status(running)  # an older write read late
    assert figures.phase == "succeeded"


def test_figures_skip_events_before_the_run_and_keep_labels_bounded():
    figures = RunnerFigures(since=100.0)

    def ev(kind: str, ts: float, **fields) -> Event:
        return Event(kind, ts, "", "", "j", fields)

    figures.apply(ev("partition_complete", 99.0, partition_id=1, output_rows=5))
    figures.apply(ev("partition_complete", 101.0, partition_id=2, output_rows=7))
    figures.apply(ev("something_new", 102.0, partition_id=3))
    figures.apply(ev("op_complete", 103.0, operation_name="f", input_rows=10, output_rows=4))
    assert figures.partitions["completed"] == 1 and figures.output_samples == 7
    assert figures.events == {"partition_complete": 1, "other": 1, "op_complete": 1}
    assert figures.op_input == {"f": 10} and figures.op_output == {"f": 4}
    assert figures.op_duration == {}  # no duration carried, nothing observed


def test_bad_port_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match=r"metrics port: 70000 .* 1-65535"):
        serve_metrics(tmp_path, 70000)
