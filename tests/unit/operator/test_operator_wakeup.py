"""When a job needs a reconcile that no event brings: deadlines, the ready timeout, the TTL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from operator_fixtures import make_job, pod

from dj_operator.api import constants as c
from dj_operator.api.types import parse_spec
from dj_operator.status import wakeup
from dj_operator.status.decide import Observed
from dj_operator.status.derive import derive

NOW = datetime(2026, 11, 30, 5, 30, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def observe(spec_patch: dict | None = None, status: dict | None = None, **kw: object) -> Observed:
    job = make_job(status=status)
    job["spec"].update(spec_patch or {})
    return Observed(
        job=job,
        spec=parse_spec(job["spec"]),
        spec_error=None,
        pods=list(kw.get("pods") or []),  # type: ignore[call-overload]
        now=kw.get("now", NOW),  # type: ignore[arg-type]
        work_dir="/data/.datajuicer/ns1/demo",
        ray_cluster=kw.get("cluster"),  # type: ignore[arg-type]
    )


def due(obs: Observed) -> datetime | None:
    return wakeup.next_check(obs, derive(obs).status)


def test_a_running_job_without_deadlines_has_nothing_pending() -> None:
    assert due(observe(pods=[pod(1)])) is None


def test_the_active_deadline_is_due_after_the_start() -> None:
    obs = observe({"activeDeadlineSeconds": 3600}, pods=[pod(1)])
    started = datetime(2026, 11, 30, 5, 1, tzinfo=UTC)  # pod(1)'s creation: the job's start
    assert due(obs) == started + timedelta(seconds=3600) + wakeup.MARGIN


def test_the_progress_deadline_is_due_after_the_last_checkpoint() -> None:
    """First at half of it (the CheckpointStale Event), then at the deadline itself."""
    status = {"progress": {"lastCheckpointTime": "2026-11-30T05:25:00Z"}}
    obs = observe({"progressDeadlineSeconds": 600}, status=status, pods=[pod(1)])
    assert due(obs) == datetime(2026, 11, 30, 5, 30, tzinfo=UTC) + wakeup.MARGIN
    later = replace(obs, now=datetime(2026, 11, 30, 5, 31, tzinfo=UTC))
    assert due(later) == datetime(2026, 11, 30, 5, 35, tzinfo=UTC) + wakeup.MARGIN


def test_the_earliest_deadline_wins() -> None:
    status = {"progress": {"lastCheckpointTime": "2026-11-30T05:25:00Z"}}
    spec = {"progressDeadlineSeconds": 1200, "activeDeadlineSeconds": 2000}
    obs = observe(spec, status=status, pods=[pod(1)])
    assert due(obs) == datetime(2026, 11, 30, 5, 34, 20, tzinfo=UTC) + wakeup.MARGIN


def test_a_suspended_job_has_nothing_pending_even_with_deadlines() -> None:
    obs = observe({"suspend": True, "activeDeadlineSeconds": 600})
    assert derive(obs).phase == c.SUSPENDED
    assert due(obs) is None


def test_a_cluster_not_ready_is_due_at_its_ready_timeout() -> None:
    cluster = {
        "metadata": {"name": "demo-ray", "creationTimestamp": "2026-11-30T05:29:00Z"},
        "status": {},
    }
    # Near the timeout it comes before the next look at the cluster's pods.
    near = datetime(2026, 11, 30, 5, 30, 58, tzinfo=UTC)
    spec = {"ray": {"mode": "kuberay", "readyTimeoutSeconds": 120}}
    obs = observe(spec, cluster=cluster, now=near)
    assert due(obs) == datetime(2026, 11, 30, 5, 31, tzinfo=UTC) + wakeup.MARGIN


def test_a_finished_job_is_due_only_at_its_ttl() -> None:
    finished = {"phase": c.SUCCEEDED, "completionTime": "2026-11-30T05:00:00Z"}
    assert due(observe(status=finished)) is None
    obs = observe({"ttlSecondsAfterFinished": 3600}, status=finished)
    assert due(obs) == datetime(2026, 11, 30, 6, 0, tzinfo=UTC) + wakeup.MARGIN


def test_settled_means_finished_or_suspended_at_the_current_generation() -> None:
    job = make_job(status={"phase": c.SUCCEEDED, "observedGeneration": 1})
    assert wakeup.settled(job)
    job["metadata"]["generation"] = 2  # edited since: reconcile it once
    assert not wakeup.settled(job)
    assert wakeup.settled(make_job(status={"phase": c.SUSPENDED, "observedGeneration": 1}))
    assert not wakeup.settled(make_job(status={"phase": c.RUNNING, "observedGeneration": 1}))
    assert not wakeup.settled(make_job())


def test_the_ttl_of_a_settled_job_is_read_from_its_body() -> None:
    job = make_job(status={"phase": c.FAILED, "completionTime": "2026-11-30T05:00:00Z"})
    assert wakeup.ttl_due(job) is None
    job["spec"]["ttlSecondsAfterFinished"] = 0
    assert wakeup.ttl_due(job) == datetime(2026, 11, 30, 5, 0, tzinfo=UTC) + SECOND


def test_a_vanished_pod_wakes_the_job_when_its_grace_period_has_passed() -> None:
    first = derive(observe(pods=[pod(1)]))
    obs = observe(status=first.status)  # the pod is gone, unseen ending: PodDeleted
    grace = 30 + 10
    assert due(obs) == NOW + timedelta(seconds=grace) + wakeup.MARGIN


def test_a_job_waiting_for_its_recipe_config_map_looks_again_soon() -> None:
    """ConfigMaps are not watched: without a timer the job would wait for ever."""
    job = make_job()
    job["spec"]["recipeFrom"] = {"configMapKeyRef": {"name": "my-recipe"}}
    del job["spec"]["recipe"]
    obs = Observed(
        job=job,
        spec=parse_spec(job["spec"]),
        spec_error=None,
        pods=[],
        now=NOW,
        recipe_source_missing="waiting for ConfigMap my-recipe with key recipe.yaml",
    )
    assert derive(obs).phase == c.PENDING
    assert due(obs) == NOW + wakeup.RECIPE_SOURCE_POLL


def test_a_waiting_runner_pod_is_woken_at_its_startup_deadline() -> None:
    waiting = pod(1)
    waiting["status"] = {"phase": "Pending"}
    obs = observe({"startupDeadlineSeconds": 3600}, pods=[waiting])
    created = datetime(2026, 11, 30, 5, 1, tzinfo=UTC)  # pod(1)'s creation
    assert due(obs) == created + timedelta(seconds=3600) + wakeup.MARGIN


def test_a_forbidden_create_is_woken_at_its_retry_time() -> None:
    retry = "2026-11-30T05:40:00Z"
    obs = observe(status={"createBackoff": {"refusals": 1, "retryTime": retry}})
    assert due(obs) == datetime(2026, 11, 30, 5, 40, tzinfo=UTC) + wakeup.MARGIN


def test_a_ray_cluster_not_ready_is_looked_at_every_few_seconds() -> None:
    """Its pods are KubeRay's and not watched: a head that cannot start shows within 5 s."""
    cluster = {"metadata": {"name": "demo-ray", "creationTimestamp": "2026-11-30T05:29:00Z"}}
    spec = {"ray": {"mode": c.MODE_KUBERAY, "readyTimeoutSeconds": 3600}}
    obs = replace(observe(spec, pods=[pod(1)]), ray_cluster=cluster)
    assert due(obs) == NOW + wakeup.RAY_PODS_POLL


def test_a_deleted_runner_pod_is_looked_at_again_once_it_counts_as_lost() -> None:
    deleting = pod(1, deleting=True)  # deleted at NOW: its grace period ends then
    lost = NOW + timedelta(seconds=c.LOST_POD_MARGIN_SECONDS) + wakeup.MARGIN
    assert due(observe(pods=[deleting])) == lost


def test_a_finished_jobs_ray_pods_left_are_looked_at_until_gone() -> None:
    """A finished job's Ray pods outlive their deleted RayCluster for a while (the garbage
    collector deletes them; on a lost node nobody ends them): it is woken when one would count
    as lost, and every RAY_PODS_POLL while one is not yet deleted; with none left, only its TTL."""
    status = {"phase": c.SUCCEEDED, "completionTime": "2026-11-30T05:20:00Z"}
    spec = {"ray": {"mode": "kuberay"}, "ttlSecondsAfterFinished": 3600}
    deleting = pod(1, deleting=True)
    deleting["metadata"]["deletionTimestamp"] = "2026-11-30T05:29:55Z"
    obs = replace(observe(spec, status=status), ray_pods=[deleting])
    lost_at = datetime(2026, 11, 30, 5, 29, 55, tzinfo=UTC)
    assert due(obs) == lost_at + timedelta(seconds=c.LOST_POD_MARGIN_SECONDS) + wakeup.MARGIN
    not_yet = pod(1)
    assert due(replace(obs, ray_pods=[not_yet])) == NOW + wakeup.RAY_PODS_POLL
    ttl = datetime(2026, 11, 30, 6, 20, tzinfo=UTC) + wakeup.MARGIN
    assert due(replace(obs, ray_pods=[])) == ttl
    suspended = replace(observe({**spec, "suspend": True}), ray_pods=[not_yet])
    assert due(suspended) == NOW + wakeup.RAY_PODS_POLL


def test_a_ray_pod_being_deleted_wakes_a_settled_job_and_any_job_at_start_up() -> None:
    """A Ray pod's event wakes its job only while the pod is being deleted: in the start-up
    listing (no event type; the job's own listing may come later) whatever the job's state, then
    only for a settled job (a live job's Ray pods are its RayCluster's). Without this, the Ray
    pods on a lost node of a job that settled while no operator ran stayed for good."""
    deleting = pod(1, deleting=True)
    deleting["metadata"]["deletionTimestamp"] = "2026-11-30T05:29:55Z"
    alive = pod(1)
    assert wakeup.ray_pod_wakes(None, deleting, job_settled=True)
    assert wakeup.ray_pod_wakes(None, deleting, job_settled=False)
    assert wakeup.ray_pod_wakes("MODIFIED", deleting, job_settled=True)
    assert not wakeup.ray_pod_wakes("MODIFIED", deleting, job_settled=False)
    assert not wakeup.ray_pod_wakes("DELETED", deleting, job_settled=True)
    for event in (None, "ADDED", "MODIFIED"):
        assert not wakeup.ray_pod_wakes(event, alive, job_settled=True)
