"""The bench report's recovery rows and scale tables (``bench/report.py``): pure rendering."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recovery(kills: int, recovered: int, median: float) -> dict[str, object]:
    return {
        "kills": kills,
        "recovered": recovered,
        "recovery_rate": recovered / kills,
        "recovery_s_median": median,
        "recovery_s_p90": median * 1.5,
        "with_recovery_time": kills - 1,
    }


def test_recovery_rows_judge_the_seeds_bounds(report: ModuleType) -> None:
    """Under 30 s to the first new commit and 99.9% of kills recovered byte-identical: one
    lost run in 100 misses the rate; a slow median misses the time."""
    time_row, rate_row = report.recovery_target_rows(recovery(100, 100, 1.4))
    assert "median of 99 kills" in time_row and "1.40 s" in time_row
    assert time_row.endswith("| **met** |") and rate_row.endswith("| **met** |")
    assert "100 of 100 (100.0%)" in rate_row
    time_row, rate_row = report.recovery_target_rows(recovery(100, 99, 31.0))
    assert time_row.endswith("| **missed** |") and rate_row.endswith("| **missed** |")


def test_scale_tables_have_a_row_per_scale(report: ModuleType) -> None:
    plan = {
        "samples": 10**5,
        "bytes": 10**8,
        "partitions": 10,
        "plan_s": 1.0,
        "plan_cpu_s": 0.9,
        "plan_peak_rss_mb": 2.0,
        "plan_json_bytes": 5000,
    }
    drive = {
        "partitions": 10,
        "write_status": True,
        "driver_cpu_s": 0.1,
        "driver_cpu_ms_per_partition": 10.0,
        "driver_events": 40,
        "driver_cpu_us_per_event": 2500.0,
        "status_json_bytes": 900,
    }
    sim = {
        "workers": 512,
        "partition_size": 10**4,
        "mean_bytes": 1000,
        "loadavg_start": [1.0],
        "loadavg_end": [2.0],
        "planning": [plan, {**plan, "samples": 10**6, "partitions": 100}],
        "driver": [drive, {**drive, "write_status": False, "status_json_bytes": None}],
        "per_partition_real_run": {
            "samples": 400,
            "partitions": 8,
            "events_per_partition": 5.0,
            "event_bytes_mean": 300.0,
            "commits_per_partition": 16.0,
            "checkpoint_files_left_per_partition": 1.0,
            "series": 40,
            "series_events_x50": 41,
        },
    }
    text = report.scale_tables(sim, None)
    assert "| 100,000 | 100,000,000 | 10 |" in text and "| 1,000,000 |" in text
    assert "| 10 | yes |" in text and "| 10 | no |" in text
    assert "bucket" not in text
    bucket = {
        "partitions": 200,
        "commits_per_partition": 16,
        "scan_cold_ms_per_partition": 3.0,
        "scan_warm_ms_per_partition": 1.0,
        "status_write_ms_median": 4.0,
        "status_write_ms_p90": 6.0,
    }
    assert "3.0 ms a partition cold" in report.scale_tables(sim, bucket)
