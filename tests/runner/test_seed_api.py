"""The seed's Python snippets, copied verbatim (only the import line changed), run against a
real job on the local engine: one partition's op fails, so there is an op error to find."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from dj_runner.api import EventType, PartitionedRayExecutor, init_configs
from dj_runner.contract import ExitCode
from dj_runner.errors import RecipeError


def write_job(tmp: Path) -> Path:
    """A recipe whose partition 1 (samples 10-19) fails in ``flaky_mapper``; one failed
    partition is allowed, so the job ends partially succeeded."""
    data = tmp / "in.jsonl"
    data.write_text(
        "".join(
            f'{{"text": "sample {i}{" FAIL-ME" if i == 15 else ""} with some words"}}\n'
            for i in range(30)
        )
    )
    state = tmp / "state"
    state.mkdir()
    recipe = {
        "project_name": "seed-api",
        "dataset_path": str(data),
        "export_path": str(tmp / "out.jsonl"),
        "work_dir": str(tmp / "work"),
        "engine": "local",
        "np": 1,
        "partition_size": 10,
        "max_retries": 0,
        "max_failed_partitions": 1,
        "process": [{"flaky_mapper": {"state_dir": str(state)}}],
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def executor(tmp_path, monkeypatch, capsys):
    """The seed's "Basic Usage", verbatim after the import line; it leaves ``executor``."""
    monkeypatch.setattr(sys, "argv", ["seed", "--config", str(write_job(tmp_path))])

    # Load configuration
    cfg = init_configs()

    # Create executor
    executor = PartitionedRayExecutor(cfg)

    # Run processing
    result = executor.run()

    # Get events and performance data
    events = executor.get_events()
    perf_summary = executor.get_performance_summary()
    print(f"Logged {len(events)} events")
    print(f"Performance: {perf_summary}")

    out = capsys.readouterr().out
    assert result.exit_code == ExitCode.PARTIAL, result.error
    assert result.failed_partitions == [1]
    assert f"Logged {len(events)} events" in out and len(events) > 10
    assert "Performance: {'ops': [{" in out
    return executor


def test_basic_usage_runs_the_job(executor):
    assert executor.get_events(event_type="job_complete")


def test_real_time_monitoring(executor, capsys):
    # Monitor events in real-time
    for event in executor.monitor_events():
        print(f"[{event.timestamp:.3f}] {event.event_type.value}: {event.message}")

        if event.event_type == EventType.OPERATION_ERROR:
            print(f"Error: {event.error_message}")

    out = capsys.readouterr().out.splitlines()
    assert any("] job_start: " in line for line in out)
    assert any("] job_complete: " in line for line in out)
    errors = [line for line in out if line.startswith("Error: ")]
    assert len(errors) == 1 and "flaky_mapper" in errors[0] and "FAIL-ME" in errors[0]


def test_event_analysis(executor):
    # Get all events
    events = executor.get_events()

    # Filter by type
    error_events = executor.get_events(event_type=EventType.OPERATION_ERROR)

    # Get performance summary
    perf_summary = executor.get_performance_summary()

    assert {e.event_type for e in events} >= {EventType.JOB_START, EventType.OP_FAILED}
    assert [e.operation_name for e in error_events] == ["flaky_mapper"]
    assert error_events[0].partition_id == 1
    assert [(op["op_name"], op["partitions"]) for op in perf_summary["ops"]] == [
        ("flaky_mapper", 2)  # partition 1 failed in it
    ]


def test_status_reports(executor, capsys):
    # Generate comprehensive report
    report = executor.generate_status_report()
    print(report)

    out = capsys.readouterr().out
    assert "partially_succeeded" in out and "seed-api" in out


def test_monitoring_names_the_failed_operation(executor, capsys):
    # Monitor events in real-time
    for event in executor.monitor_events():
        if event.event_type == EventType.OPERATION_ERROR:
            print(f"Error in {event.operation_name}: {event.error_message}")

    out = capsys.readouterr().out
    assert out.startswith("Error in flaky_mapper: ") and out.count("Error in") == 1


def test_every_written_event_type_is_an_event_type_member(executor):
    for event in executor.get_events():
        assert isinstance(event.event_type, EventType), event.event_type
        assert event.to_dict()["event_type"] == event.event_type.value


def test_init_configs_takes_a_path_a_mapping_or_arguments(tmp_path):
    path = write_job(tmp_path)
    raw = yaml.safe_load(path.read_text())
    by_path = init_configs(path)
    by_mapping = init_configs(raw)
    by_args = init_configs(["--config", str(path), "--job_id", "j-1"])
    assert by_path.dataset_path == by_mapping.dataset_path == raw["dataset_path"]
    assert by_args.job_id == "j-1"
    with pytest.raises(RecipeError, match="--confg"):
        init_configs(["--confg", str(path)])
    with pytest.raises(RecipeError, match=r"'--config'.*a recipe YAML"):
        init_configs([])
