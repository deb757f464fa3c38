"""The status reader: a DataJuicerJob body read into the figures the metrics show."""

from __future__ import annotations

from typing import Any

import pytest

from dj_operator.api import constants as c
from dj_operator.status.reader import JobIndex, JobView, parse_time

T0 = 1_700_000_000.0


def body(status: dict[str, Any] | None = None, name: str = "a") -> dict[str, Any]:
    job: dict[str, Any] = {
        "metadata": {
            "namespace": "team-a",
            "name": name,
            "uid": f"u-{name}",
            "creationTimestamp": "2023-11-14T22:13:20Z",
        },
        "spec": {},
    }
    if status is not None:
        job["status"] = status
    return job


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T23:13:20.500+01:00", T0 + 0.5),
        ("", None),
        ("yesterday", None),
        (None, None),
        (T0, None),
    ],
)
def test_timestamps_read_as_unix_seconds(text: object, expected: float | None) -> None:
    assert parse_time(text) == expected


def test_an_unknown_or_absent_phase_reads_as_pending_with_the_defaults() -> None:
    for status in (None, {"phase": "Exploding"}):
        view = JobView.of(body(status), T0)
        assert view.phase == c.PENDING and view.mode == c.MODE_LOCAL
        assert view.failure_reason is None and view.attempt == 0 and view.restarts == 0
        assert view.created_at == T0 and view.progress_ratio == 0.0


def test_both_shapes_of_progress_give_the_same_figures() -> None:
    nested = {
        "partitions": {"total": 10, "done": 4, "failed": 1, "running": 2},
        "samples": {"in": 100, "out": 90, "rejected": 3},
        "last_checkpoint_at": "2023-11-14T22:13:30Z",
    }
    flat = {
        "partitionsTotal": 10,
        "partitionsCompleted": 4,
        "partitionsFailed": 1,
        "partitionsRunning": 2,
        "samplesIn": 100,
        "samplesOut": 90,
        "samplesRejected": 3,
        "lastCheckpointTime": "2023-11-14T22:13:30Z",
    }
    views = [JobView.of(body({"phase": c.RUNNING, "progress": p}), T0) for p in (nested, flat)]
    assert (
        views[0].partitions
        == views[1].partitions
        == {
            "total": 10,
            "done": 4,
            "failed": 1,
            "running": 2,
        }
    )
    assert views[0].samples == views[1].samples == {"in": 100, "out": 90, "rejected": 3}
    assert views[0].last_checkpoint_at == views[1].last_checkpoint_at == T0 + 10
    assert views[0].progress_ratio == 0.5


def test_the_failure_reason_is_read_only_for_a_failed_job() -> None:
    failed = JobView.of(body({"phase": c.FAILED, "failure": {"reason": c.R_STALLED}}), T0)
    assert failed.failure_reason == c.R_STALLED
    partial = {"phase": c.PARTIALLY_SUCCEEDED, "failure": {"reason": c.R_RUNNER_FAILED}}
    assert JobView.of(body(partial), T0).failure_reason is None
    assert JobView.of(body({"phase": c.FAILED}), T0).failure_reason == "Unknown"


def test_the_index_reports_each_transition_with_the_view_before() -> None:
    seen: list[tuple[str | None, str]] = []
    index = JobIndex(
        on_transition=lambda old, new: seen.append((old.phase if old else None, new.phase)),
        clock=lambda: T0,
    )
    index.upsert(body({"phase": c.STARTING}))
    index.upsert(body({"phase": c.RUNNING}))
    index.upsert(body({"phase": c.RUNNING}, name="b"))
    assert seen == [(None, c.STARTING), (c.STARTING, c.RUNNING), (None, c.RUNNING)]
    index.replace_all([body({"phase": c.SUCCEEDED})])
    assert [v.name for v in index.views()] == ["a"] and len(index) == 1
