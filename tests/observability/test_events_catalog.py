"""The Event reason catalog and the deduplicating, rate-limited recorder (pure logic)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dj_operator.events_catalog import (
    CATALOG,
    MAX_MESSAGE,
    Bump,
    Create,
    EventCorrelator,
    EventGone,
    EventRecorder,
    ObjectRef,
    Suppressed,
)
from dj_runner import contract


def job(name: str = "demo", uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": contract.API_VERSION,
        "kind": "DataJuicerJob",
        "metadata": {"namespace": "team-a", "name": name, "uid": uid},
    }


class FakeSink:
    """Records the calls; ``gone`` names Events the server has expired."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.bumps: list[tuple[str, int]] = []
        self.gone: set[str] = set()
        self.existing: dict[str, int] = {}  # name -> count, posted before a restart

    def create(self, body: dict[str, Any]) -> int:
        self.created.append(body)
        name = body["metadata"]["name"]
        self.existing[name] = self.existing.get(name, 0) + 1
        return self.existing[name]

    def bump(self, namespace: str, name: str, count: int, last_timestamp: str) -> None:
        if name in self.gone:
            raise EventGone(name)
        self.bumps.append((name, count))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_catalog_reasons_are_upper_camel_case_and_failures_are_warnings():
    assert len(CATALOG) >= 15
    for name, entry in CATALOG.items():
        assert re.fullmatch(r"(?:[A-Z][a-z]+)+", name), name
        assert entry.name == name and entry.type in ("Normal", "Warning") and entry.when
    for failure in (
        "InvalidSpec",
        "InvalidInput",
        "ResumeRefused",
        "RunnerFailed",
        "BackoffLimitExceeded",
        "DeadlineExceeded",
        "Stalled",
        "ClusterNotReady",
        "Retrying",
    ):
        assert CATALOG[failure].type == "Warning"
    for normal in ("Created", "Started", "Resumed", "Suspended", "Succeeded"):
        assert CATALOG[normal].type == "Normal"


def test_unknown_reason_is_refused_with_the_catalog_named():
    with pytest.raises(ValueError, match=r"'Exploded' is not in the published catalog.*Created"):
        EventCorrelator().decide(ObjectRef.from_body(job()), "Exploded", "x", 0.0)


def test_same_reason_and_message_raise_a_count_instead_of_a_new_event():
    sink, clock = FakeSink(), Clock()
    recorder = EventRecorder(sink, clock=clock)
    first = recorder.record(job(), "Retrying", "runner exited 7: Ray lost")
    clock.now += 10
    second = recorder.record(job(), "Retrying", "runner exited 7: Ray lost")
    third = recorder.record(job(), "Retrying", "runner exited 137: killed")
    assert isinstance(first, Create) and isinstance(second, Bump) and isinstance(third, Create)
    assert len(sink.created) == 2 and sink.bumps == [(first.body["metadata"]["name"], 2)]
    body = first.body
    assert body["type"] == "Warning" and body["reason"] == "Retrying" and body["count"] == 1
    assert body["involvedObject"] == {
        "apiVersion": contract.API_VERSION,
        "kind": "DataJuicerJob",
        "namespace": "team-a",
        "name": "demo",
        "uid": "u-1",
    }
    assert body["metadata"]["namespace"] == "team-a"
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2023-11-14T22:13:20Z"
    assert second.last_timestamp == "2023-11-14T22:13:30Z"


def test_a_job_of_1000_partitions_with_50_failures_posts_a_bounded_number_of_events():
    """Even if every partition failure were posted, with its own message: 25 objects at most.

    (The operator posts transitions only, so such a job posts ~4 Events: Created, Started,
    Retrying if the runner restarts, PartiallySucceeded. This bounds a misuse.)
    """
    sink, clock = FakeSink(), Clock()
    suppressed: list[str] = []
    recorder = EventRecorder(sink, clock=clock, on_suppressed=suppressed.append)
    for pid in range(1000):
        clock.now += 0.5  # the whole job: 500 s
        if pid % 20 == 0:
            recorder.record(job(), "Retrying", f"partition {pid} failed: ValueError")
    recorder.record(job(), "PartiallySucceeded", "50 of 1000 partitions failed")
    # 25 (burst) + 1 refill in 500 s (one token per 300 s); the rest are counted, not posted.
    assert len(sink.created) == 26
    assert len(suppressed) == 51 - 26
    # Another job has its own bucket: it is not starved by the noisy one.
    assert isinstance(recorder.record(job("other", "u-2"), "Started", "attempt 0"), Create)


def test_the_bucket_refills_one_event_every_five_minutes():
    correlator = EventCorrelator(burst=2, refill_every_s=300)
    obj = ObjectRef.from_body(job())
    decisions = [correlator.decide(obj, "Retrying", f"m{i}", 1000.0) for i in range(3)]
    assert [type(d) for d in decisions] == [Create, Create, Suppressed]
    assert isinstance(correlator.decide(obj, "Retrying", "m3", 1000.0 + 299), Suppressed)
    assert isinstance(correlator.decide(obj, "Retrying", "m4", 1000.0 + 600), Create)


def test_caches_stay_bounded_over_many_objects():
    correlator = EventCorrelator(max_entries=100)
    for i in range(1000):
        correlator.decide(ObjectRef.from_body(job(f"j{i}", f"u{i}")), "Created", "ok", float(i))
    assert len(correlator._buckets) == 100 and len(correlator._posted) == 100


def test_an_expired_event_is_posted_anew():
    sink, clock = FakeSink(), Clock()
    recorder = EventRecorder(sink, clock=clock)
    first = recorder.record(job(), "Stalled", "no progress for 600s")
    assert isinstance(first, Create)
    sink.gone.add(first.body["metadata"]["name"])
    clock.now += 3600
    again = recorder.record(job(), "Stalled", "no progress for 600s")
    assert isinstance(again, Create) and len(sink.created) == 2 and sink.bumps == []


def test_long_messages_are_cut():
    decision = EventCorrelator().decide(ObjectRef.from_body(job()), "RunnerFailed", "x" * 5000, 0)
    assert isinstance(decision, Create)
    assert len(decision.body["message"]) == MAX_MESSAGE
    assert decision.body["message"].endswith("...")


def test_names_are_stable_so_a_restarted_operator_raises_the_count_it_left():
    """A second recorder (the operator after a restart) names the same Event the same way; the
    server says it exists with count 3, and later repeats continue from there."""
    sink, clock = FakeSink(), Clock()
    before = EventRecorder(sink, clock=clock).record(job(), "Retrying", "runner exited 137")
    assert isinstance(before, Create)
    name = before.body["metadata"]["name"]
    sink.existing[name] = 3
    after = EventRecorder(sink, clock=clock)
    again = after.record(job(), "Retrying", "runner exited 137")
    assert isinstance(again, Create) and again.body["metadata"]["name"] == name
    assert sink.existing[name] == 4
    clock.now += 1
    bumped = after.record(job(), "Retrying", "runner exited 137")
    assert isinstance(bumped, Bump) and bumped.count == 5 and bumped.name == name
    # The name differs by job uid, reason and message, and fits a DNS subdomain.
    other_uid = EventCorrelator().decide(
        ObjectRef.from_body(job(uid="u-2")), "Retrying", "runner exited 137", 0.0
    )
    assert isinstance(other_uid, Create) and other_uid.body["metadata"]["name"] != name
    long_name = EventCorrelator().decide(ObjectRef.from_body(job("j" * 253)), "Created", "x", 0.0)
    assert isinstance(long_name, Create) and len(long_name.body["metadata"]["name"]) <= 253


def test_concurrent_posts_from_many_threads_stay_consistent():
    import threading

    sink, clock = FakeSink(), Clock()
    recorder = EventRecorder(sink, clock=clock, correlator=EventCorrelator(burst=10_000))
    bumps: list[int] = []
    sink_bump = sink.bump

    def bump(namespace: str, name: str, count: int, last_timestamp: str) -> None:
        bumps.append(count)
        sink_bump(namespace, name, count, last_timestamp)

    sink.bump = bump  # type: ignore[method-assign]
    threads = [
        threading.Thread(
            target=lambda: [recorder.record(job(), "Retrying", "same") for _ in range(200)]
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sink.created) == 1
    assert sorted(bumps) == list(range(2, 1601))
