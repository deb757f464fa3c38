"""The startup milestones: recorded once from observed facts; the intervals between them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from operator_fixtures import derived, make_job, pod

from dj_operator.api import constants as c
from dj_operator.status import timeline
from dj_operator.status.derive import Outcome

NOW = datetime(2026, 11, 30, 5, 30, tzinfo=UTC)
KUBERAY = {"ray": {"mode": "kuberay", "workers": {"replicas": 1}}}


def run(
    pods: list[dict],
    status: dict | None = None,
    progress: dict | None = None,
    spec_patch: dict | None = None,
    cluster: dict | None = None,
    now: datetime = NOW,
) -> Outcome:
    job = make_job(status={**(status or {}), **({"progress": progress} if progress else {})})
    job["spec"].update(spec_patch or {})
    return derived(job, pods, now, ray_cluster=cluster)


def ready_cluster(moved: str | None = None) -> dict:
    status: dict = {"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "True"}]}
    if moved:
        status["stateTransitionTimes"] = {"ready": moved}
    return {
        "metadata": {"name": "demo-ray", "creationTimestamp": "2026-11-30T05:00:05Z"},
        "status": status,
    }


def test_local_mode_records_each_milestone_once_from_the_facts() -> None:
    out = run([])  # nothing observed yet: no timeline
    assert out.status["timeline"] is None
    out = run([pod(1)], status=out.status)
    assert out.status["timeline"] == {"podCreated": "2026-11-30T05:01:00Z"}
    progress = {"podName": "demo-runner-1", "engineReadyTime": "2026-11-30T05:01:30.250Z"}
    out = run([pod(1)], status=out.status, progress=progress)
    assert out.status["timeline"]["rayReady"] == "2026-11-30T05:01:30.250Z"
    progress |= {"lastCheckpointTime": "2026-11-30T05:02:00.000Z"}
    out = run([pod(1)], status=out.status, progress=progress)
    first = dict(out.status["timeline"])
    assert first["firstCheckpoint"] == "2026-11-30T05:02:00.000Z"
    # Later reports (a later checkpoint, an engine started again) move nothing.
    later = {
        "podName": "demo-runner-1",
        "engineReadyTime": "2026-11-30T05:09:00Z",
        "lastCheckpointTime": "2026-11-30T05:10:00Z",
    }
    out = run([pod(1)], status=out.status, progress=later)
    assert out.status["timeline"] == first
    done = {**later, "state": "succeeded"}
    out = run([pod(1, "Succeeded", exit_code=0)], status=out.status, progress=done)
    assert out.phase == c.SUCCEEDED, out.status["failure"]
    assert out.status["timeline"] == first


def test_a_checkpoint_reported_only_in_the_checkpoint_record_counts_too() -> None:
    progress = {"checkpoint": {"time": "2026-11-30T05:03:00Z"}, "lastCheckpointTime": None}
    out = run([pod(1)], progress=progress)
    assert out.status["timeline"]["firstCheckpoint"] == "2026-11-30T05:03:00Z"
    # A point an earlier run committed (time empty) is no commit of this job's runner yet.
    out = run([pod(1)], progress={"checkpoint": {"time": None, "summary": "4/10"}})
    assert "firstCheckpoint" not in out.status["timeline"]


def test_kuberay_ray_ready_is_when_the_cluster_was_first_ready() -> None:
    out = run([], spec_patch=KUBERAY)
    assert out.status["timeline"] is None
    out = run([], status=out.status, spec_patch=KUBERAY, cluster=ready_cluster())
    assert out.status["timeline"] == {"rayReady": "2026-11-30T05:30:00Z"}  # seen now
    # The runner's own engine time is not the cluster's readiness in kuberay mode.
    out = run(
        [pod(1)],
        status=out.status,
        spec_patch=KUBERAY,
        cluster=ready_cluster(),
        progress={"engineReadyTime": "2026-11-30T05:40:00Z"},
        now=NOW + timedelta(minutes=5),
    )
    assert out.status["timeline"] == {
        "rayReady": "2026-11-30T05:30:00Z",
        "podCreated": "2026-11-30T05:01:00Z",
    }


def test_kuberay_ready_time_is_kuberays_own_where_it_reports_one() -> None:
    out = run([], spec_patch=KUBERAY, cluster=ready_cluster("2026-11-30T05:00:40Z"))
    assert out.status["timeline"] == {"rayReady": "2026-11-30T05:00:40Z"}


def test_a_cluster_not_ready_records_nothing() -> None:
    cluster = ready_cluster()
    cluster["status"]["conditions"] = [{"type": "HeadPodReady", "status": "False"}]
    out = run([], spec_patch=KUBERAY, cluster=cluster)
    assert out.status["timeline"] is None


def body(mode: str, created: str, recorded: dict, completed: str | None = None) -> dict:
    status: dict = {"timeline": recorded}
    if completed:
        status["completionTime"] = completed
    return {
        "metadata": {"creationTimestamp": created},
        "spec": {"ray": {"mode": mode}},
        "status": status,
    }


def test_intervals_follow_each_modes_order() -> None:
    recorded = {
        "podCreated": "2026-11-30T05:00:02Z",
        "rayReady": "2026-11-30T05:00:10Z",
        "firstCheckpoint": "2026-11-30T05:01:00Z",
    }
    local = timeline.milestones(
        body("local", "2026-11-30T05:00:00Z", recorded, "2026-11-30T05:05:00Z")
    )
    assert timeline.intervals(c.MODE_LOCAL, local) == {
        "apply_to_pod_created": 2.0,
        "pod_created_to_ray_ready": 8.0,
        "ray_ready_to_first_checkpoint": 50.0,
        "first_checkpoint_to_finished": 240.0,
    }
    kuberay = {**recorded, "rayReady": "2026-11-30T05:00:01Z"}
    points = timeline.milestones(body("kuberay", "2026-11-30T05:00:00Z", kuberay))
    assert timeline.intervals(c.MODE_KUBERAY, points) == {
        "apply_to_ray_ready": 1.0,
        "ray_ready_to_pod_created": 1.0,
        "pod_created_to_first_checkpoint": 58.0,
    }
    assert set(timeline.INTERVALS) == set(timeline.mode_intervals("local")) | set(
        timeline.mode_intervals("kuberay")
    )
    assert len(timeline.INTERVALS) == 7


def test_new_intervals_are_those_whose_end_is_newly_recorded() -> None:
    before = {"apply": 0.0, "podCreated": 2.0}
    after = {**before, "rayReady": 5.0, "firstCheckpoint": 9.0}
    assert timeline.new_intervals("local", before, after) == {
        "pod_created_to_ray_ready": 3.0,
        "ray_ready_to_first_checkpoint": 4.0,
    }
    assert timeline.new_intervals("local", after, after) == {}
    # A milestone missing (an older runner reports no engine time): the intervals around it wait.
    no_ray = {"apply": 0.0, "podCreated": 2.0, "firstCheckpoint": 9.0, "finished": 20.0}
    assert timeline.new_intervals("local", before, no_ray) == {"first_checkpoint_to_finished": 11.0}


def test_clock_skew_never_gives_a_negative_interval() -> None:
    points = {"apply": 10.0, "podCreated": 9.5}
    assert timeline.intervals("local", points) == {"apply_to_pod_created": 0.0}
