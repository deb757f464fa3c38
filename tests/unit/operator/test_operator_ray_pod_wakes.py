"""The Ray pod watch handler: a Ray pod being deleted wakes its job once per deletion."""

from __future__ import annotations

import pytest

from dj_operator.api import constants as c
from dj_operator.handlers import kopf_handlers as h


def ray_pod(uid: str, job: str, deleting: bool) -> dict:
    meta: dict = {"uid": uid, "name": f"{job}-ray-head", "annotations": {c.ANNOTATION_JOB: job}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T10:00:00Z"
    return {"metadata": meta}


@pytest.fixture
def woken(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(h, "_reconcile", lambda ns, name: calls.append((ns, name)))
    monkeypatch.setattr(h.State, "settled", {("ns", "done")})
    monkeypatch.setattr(h.State, "ray_pods_woken", set())
    return calls


def test_a_deleted_ray_pod_of_a_settled_job_wakes_it_once(woken: list) -> None:
    h.ray_pod_event("MODIFIED", ray_pod("u1", "done", deleting=False), "ns")
    assert woken == []  # not being deleted
    for _ in range(3):  # the deletion's later events: the job's timers follow them
        h.ray_pod_event("MODIFIED", ray_pod("u1", "done", deleting=True), "ns")
    assert woken == [("ns", "done")]
    h.ray_pod_event("DELETED", ray_pod("u1", "done", deleting=True), "ns")
    assert h.State.ray_pods_woken == set()


def test_the_start_up_listing_wakes_any_job_and_later_events_only_settled_ones(
    woken: list,
) -> None:
    h.ray_pod_event(None, ray_pod("u2", "running", deleting=True), "ns")
    h.ray_pod_event("MODIFIED", ray_pod("u3", "running", deleting=True), "ns")
    h.ray_pod_event(None, ray_pod("u4", "done", deleting=False), "ns")
    assert woken == [("ns", "running")]
    h.ray_pod_event("MODIFIED", {"metadata": {"uid": "u5"}}, "ns")  # no job named: ignored
    assert woken == [("ns", "running")]
