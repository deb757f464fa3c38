"""The per-op performance summary: each partition counted once per op, with its latest run."""

from __future__ import annotations

from dj_runner.observe.event_log import Event
from dj_runner.observe.report import performance_summary


def _op_complete(t: float, partition: int, rows_in: int, rows_out: int) -> Event:
    fields = {
        "partition_id": partition,
        "operation_idx": 0,
        "operation_name": "text_length_filter",
        "input_rows": rows_in,
        "output_rows": rows_out,
        "duration": 1.0,
    }
    return Event("op_complete", t, "", f"e{t}", "job", fields)


def test_a_recomputed_partition_counts_once_with_its_latest_run():
    events = [
        _op_complete(1.0, 0, 100, 90),
        _op_complete(2.0, 1, 100, 80),
        _op_complete(3.0, 1, 100, 85),  # partition 1 again: a rerun recomputed it
    ]
    (op,) = performance_summary(events)["ops"]
    assert (op["partitions"], op["rows_in"], op["rows_out"]) == (2, 200, 175)
    assert op["seconds"] == 2.0
