"""Per-job timers and the event routing of the kopf handlers: a settled job costs no reconcile,
a job with something due gets a timer, a failed reconcile is retried with a backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from operator_fixtures import make_job, pod

from dj_operator.api import constants as c
from dj_operator.handlers import kopf_handlers as kh
from dj_operator.handlers.reconcile import Reconciled
from dj_operator.handlers.timers import TICK, Key, Timers
from dj_operator.status import times


def test_a_timer_fires_once_at_its_due_time_and_a_new_schedule_replaces_it() -> None:
    fired: list[Key] = []
    done = threading.Event()

    def fire(key: Key) -> None:
        fired.append(key)
        done.set()

    timers = Timers(fire).start()
    try:
        start = time.monotonic()
        timers.schedule(("ns", "a"), start + 60)
        timers.schedule(("ns", "a"), start + 0.2)  # replaces the first
        assert done.wait(10)
        assert time.monotonic() - start >= 0.2
        assert fired == [("ns", "a")]
        assert timers.pending() == {}
    finally:
        timers.stop()


def test_a_cancelled_timer_never_fires() -> None:
    fired: list[Key] = []
    other = threading.Event()
    timers = Timers(lambda key: (fired.append(key), other.set())).start()
    try:
        now = time.monotonic()
        timers.schedule(("ns", "gone"), now + 0.1)
        timers.cancel(("ns", "gone"))
        timers.schedule(("ns", "kept"), now + 0.3)
        assert other.wait(10)
        assert fired == [("ns", "kept")]
    finally:
        timers.stop()


def test_a_blocked_reconcile_blocks_neither_other_timers_nor_the_heartbeat() -> None:
    """Liveness is the thread's tick: a reconcile that hangs delays nothing else."""
    release, other = threading.Event(), threading.Event()

    def fire(key: Key) -> None:
        if key == ("ns", "slow"):
            release.wait(30)
        else:
            other.set()

    timers = Timers(fire).start()
    try:
        timers.schedule(("ns", "slow"), time.monotonic())
        timers.schedule(("ns", "fast"), time.monotonic() + 0.2)
        assert other.wait(10)
        assert timers.alive() and timers.seconds_since_beat() < TICK
    finally:
        release.set()
        timers.stop()


class Calls:
    def __init__(self, result: Reconciled | Exception) -> None:
        self.result = result
        self.keys: list[Key] = []

    def __call__(self, kube: object, namespace: str, name: str, defaults: object) -> Reconciled:
        self.keys.append((namespace, name))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Timers]:
    """The handlers with timers that never fire (only their schedule is looked at)."""
    timers = Timers(lambda key: None)
    monkeypatch.setattr(kh.State, "timers", timers)
    monkeypatch.setattr(kh.State, "kube", object())
    monkeypatch.setattr(kh.State, "settled", set())
    monkeypatch.setattr(kh.State, "failures", {})
    monkeypatch.setattr(kh.State, "written", {})
    monkeypatch.setattr(kh.State, "running", set())
    monkeypatch.setattr(kh.State, "dirty", set())
    yield timers


def test_a_finished_job_at_its_generation_is_not_reconciled(
    handlers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(Reconciled(c.SUCCEEDED))
    monkeypatch.setattr(kh.rec, "reconcile", calls)
    done = make_job(status={"phase": c.SUCCEEDED, "observedGeneration": 1})
    kh.job_event(type=None, body=done, name="demo", namespace="ns1")  # the start-up listing
    kh.job_event(type="MODIFIED", body=done, name="demo", namespace="ns1")  # our status write
    # An idle pod of the finished job replayed by the listing wakes nothing either.
    kh.pod_event(type=None, body=_owned(pod(1, "Succeeded", exit_code=0)), namespace="ns1")
    assert calls.keys == []
    assert handlers.pending() == {}  # no TTL, no timer
    # An edit (a new generation) is reconciled once.
    edited = make_job(status={"phase": c.SUCCEEDED, "observedGeneration": 1})
    edited["metadata"]["generation"] = 2
    kh.job_event(type="MODIFIED", body=edited, name="demo", namespace="ns1")
    assert calls.keys == [("ns1", "demo")]


def test_a_finished_job_with_a_ttl_gets_a_timer_and_no_reconcile(
    handlers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(Reconciled(c.SUCCEEDED))
    monkeypatch.setattr(kh.rec, "reconcile", calls)
    completed = times.now() - timedelta(seconds=30)
    body = make_job(
        status={
            "phase": c.SUCCEEDED,
            "observedGeneration": 1,
            "completionTime": times.fmt(completed),
        }
    )
    body["spec"]["ttlSecondsAfterFinished"] = 60
    kh.job_event(type=None, body=body, name="demo", namespace="ns1")
    assert calls.keys == []
    left = handlers.pending()[("ns1", "demo")] - time.monotonic()
    assert 20 < left < 40


def test_a_running_job_is_reconciled_on_each_event_and_timed_only_when_something_is_due(
    handlers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = make_job(status={"phase": c.RUNNING, "observedGeneration": 1})
    monkeypatch.setattr(kh.rec, "reconcile", Calls(Reconciled(c.RUNNING)))
    kh.job_event(type="MODIFIED", body=body, name="demo", namespace="ns1")
    assert handlers.pending() == {}
    due = times.now() + timedelta(seconds=100)
    calls = Calls(Reconciled(c.RUNNING, due=due))
    monkeypatch.setattr(kh.rec, "reconcile", calls)
    kh.pod_event(type="MODIFIED", body=_owned(pod(1)), namespace="ns1")
    assert calls.keys == [("ns1", "demo")]
    left = handlers.pending()[("ns1", "demo")] - time.monotonic()
    assert 90 < left <= 100
    kh.job_event(type="DELETED", body=body, name="demo", namespace="ns1")
    assert handlers.pending() == {}


def test_a_failed_reconcile_is_retried_with_a_growing_backoff(
    handlers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kh.rec, "reconcile", Calls(RuntimeError("API server unavailable")))
    body = make_job(status={"phase": c.RUNNING, "observedGeneration": 1})
    lefts = []
    for _ in range(3):
        kh.job_event(type="MODIFIED", body=body, name="demo", namespace="ns1")
        lefts.append(handlers.pending()[("ns1", "demo")] - time.monotonic())
    assert [round(x) for x in lefts] == [round(d) for d in kh.RETRY_DELAYS[:3]]
    monkeypatch.setattr(kh.rec, "reconcile", Calls(Reconciled(c.RUNNING)))
    kh.job_event(type="MODIFIED", body=body, name="demo", namespace="ns1")
    assert handlers.pending() == {} and kh.State.failures == {}


def _owned(pod_obj: dict) -> dict:
    pod_obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "datajuicer.io/v1alpha1", "kind": "DataJuicerJob", "name": "demo"}
    ]
    return pod_obj


def test_the_echo_of_the_operators_own_status_write_wakes_nothing(
    handlers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = make_job(status={"phase": c.STARTING, "observedGeneration": 1})
    calls = Calls(Reconciled(c.RUNNING, written="42", seen=kh.rec.inputs(body)))
    monkeypatch.setattr(kh.rec, "reconcile", calls)
    body["metadata"]["resourceVersion"] = "41"
    kh.job_event(type="MODIFIED", body=body, name="demo", namespace="ns1")
    body["metadata"]["resourceVersion"] = "42"  # the status the reconcile wrote
    kh.job_event(type="MODIFIED", body=body, name="demo", namespace="ns1")
    assert calls.keys == [("ns1", "demo")]
    body["metadata"]["resourceVersion"] = "43"  # someone else's change
    kh.job_event(type="MODIFIED", body=body, name="demo", namespace="ns1")
    assert calls.keys == [("ns1", "demo")] * 2


def test_an_echo_that_folds_in_the_runners_progress_is_reconciled(
    handlers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events can arrive batched: the runner's progress patch just before the operator's own
    write comes back under the write's resourceVersion, and must not be lost."""
    body = make_job(status={"phase": c.RUNNING, "observedGeneration": 1})
    calls = Calls(Reconciled(c.RUNNING, written="42", seen=kh.rec.inputs(body)))
    monkeypatch.setattr(kh.rec, "reconcile", calls)
    kh.job_event(type="MODIFIED", body=body, name="demo", namespace="ns1")
    body["metadata"]["resourceVersion"] = "42"
    body["status"]["progress"] = {"lastCheckpointTime": "2026-11-30T05:29:00Z"}
    kh.job_event(type="MODIFIED", body=body, name="demo", namespace="ns1")
    assert calls.keys == [("ns1", "demo")] * 2


def test_events_during_a_reconcile_coalesce_into_one_more_reconcile(
    handlers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three events while a reconcile runs: no thread blocks, one more reconcile follows."""
    entered, release = threading.Event(), threading.Event()
    keys: list[Key] = []

    def slow(kube: object, namespace: str, name: str, defaults: object) -> Reconciled:
        keys.append((namespace, name))
        if len(keys) == 1:
            entered.set()
            assert release.wait(10)
        return Reconciled(c.RUNNING)

    monkeypatch.setattr(kh.rec, "reconcile", slow)
    body = make_job(status={"phase": c.RUNNING, "observedGeneration": 1})
    first = threading.Thread(
        target=kh.job_event,
        kwargs={"type": "MODIFIED", "body": body, "name": "demo", "namespace": "ns1"},
    )
    first.start()
    assert entered.wait(10)
    for _ in range(3):  # each returns at once
        kh.pod_event(type="MODIFIED", body=_owned(pod(1)), namespace="ns1")
    assert keys == [("ns1", "demo")]
    release.set()
    first.join(10)
    assert not first.is_alive()
    assert keys == [("ns1", "demo")] * 2
    assert kh.State.running == set() and kh.State.dirty == set()
