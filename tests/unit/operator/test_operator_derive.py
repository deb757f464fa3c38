"""The state machine: observed children and progress in, phase, conditions, actions, events out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from operator_fixtures import derived, make_job, pod

from dj_operator.api import constants as c
from dj_operator.api.types import SpecError, parse_spec
from dj_operator.status.decide import Observed
from dj_operator.status.derive import Outcome, derive, ray_cluster_status

NOW = datetime(2026, 11, 30, 5, 30, tzinfo=UTC)


def run(
    pods: list[dict] = (),  # type: ignore[assignment]
    status: dict | None = None,
    spec_patch: dict | None = None,
    now: datetime = NOW,
    tails: dict[str, str] | None = None,
    cluster: dict | None = None,
    spec_error: SpecError | None = None,
) -> Outcome:
    job = make_job(status=status)
    job["spec"].update(spec_patch or {})
    spec = None if spec_error else parse_spec(job["spec"])
    return derive(
        Observed(
            job=job,
            spec=spec,
            spec_error=spec_error,
            pods=list(pods),
            now=now,
            work_dir="/data/.datajuicer/ns1/demo",
            output_path="/data/output/result.jsonl",
            ray_cluster=cluster,
            log_tails=tails or {},
        )
    )


def kinds(outcome: Outcome) -> list[tuple[str, Any]]:
    return [
        (a.kind, a.attempt if a.kind == "create-pod" else a.pods or None) for a in outcome.actions
    ]


def cond(outcome: Outcome, ctype: str) -> dict:
    return next(x for x in outcome.status["conditions"] if x["type"] == ctype)


def reasons(outcome: Outcome) -> list[str]:
    return [e.reason.name for e in outcome.events]


def after(outcome: Outcome, pods: list[dict], **kw: Any) -> Outcome:
    """The next reconcile, with the status the previous one wrote."""
    return run(pods, status=outcome.status, **kw)


def test_a_new_job_creates_its_children_and_attempt_1() -> None:
    out = run()
    assert kinds(out) == [("ensure-children", None), ("create-pod", 1)]
    assert out.phase == c.STARTING
    assert reasons(out) == ["Started"]
    assert out.status["children"]["runnerPod"] == "demo-runner-1"
    assert out.status["startTime"] == "2026-11-30T05:30:00Z"


def test_a_running_pod_is_running_and_nothing_is_created() -> None:
    out = run([pod(1)])
    assert out.actions == ()
    assert out.phase == c.RUNNING
    assert cond(out, c.COND_RUNNING)["status"] == "True"
    assert out.status["attempts"] == [
        {"index": 1, "podName": "demo-runner-1", "startTime": "2026-11-30T05:01:00Z"}
    ]


def test_the_operator_killed_after_creating_the_pod_adopts_it() -> None:
    """No status written, pod 1 exists: attempt 1 is recorded, no second pod."""
    out = run([pod(1, phase="Pending")], now=datetime(2026, 11, 30, 5, 2, tzinfo=UTC))
    assert out.actions == ()
    assert out.phase == c.STARTING
    assert [a["index"] for a in out.status["attempts"]] == [1]


@pytest.mark.parametrize(
    ("code", "phase", "reason"),
    [
        (0, c.SUCCEEDED, None),
        (3, c.PARTIALLY_SUCCEEDED, c.R_RUNNER_FAILED),
        (1, c.FAILED, c.R_RUNNER_FAILED),
        (2, c.FAILED, c.R_INVALID_INPUT),
        (4, c.FAILED, c.R_RESUME_REFUSED),
    ],
)
def test_terminal_exit_codes(code: int, phase: str, reason: str | None) -> None:
    tail = "starting\nerror: recipe key 'dataset_path': got 'x'; expected an existing path\n"
    out = run([pod(1, "Succeeded" if code == 0 else "Failed", code)], tails={"demo-runner-1": tail})
    assert out.phase == phase
    assert not any(a.kind == "create-pod" for a in out.actions)
    assert cond(out, c.COND_RUNNING)["status"] == "False"
    assert cond(out, c.COND_FINISHED)["status"] == "True"
    assert cond(out, c.COND_SUCCEEDED)["status"] == ("True" if code == 0 else "False")
    assert cond(out, c.COND_FAILED)["status"] == ("True" if phase == c.FAILED else "False")
    assert out.status["completionTime"] == "2026-11-30T05:30:00Z"
    if reason is None:
        assert out.status["failure"] is None
    else:
        failure = out.status["failure"]
        assert failure["reason"] == reason
        assert failure["exitCode"] == code
        assert failure["podName"] == "demo-runner-1"
        assert "expected an existing path" in failure["message"]
        assert failure["logTail"] == tail
    assert out.status["restarts"] == 0


@pytest.mark.parametrize("code", [5, 6, 7, 8, 70, 137, 143])
def test_retryable_exit_codes_start_the_next_attempt(code: int) -> None:
    out = run([pod(1, "Failed", code)])
    assert kinds(out) == [("ensure-children", None), ("create-pod", 2)]
    assert out.status["restarts"] == 1
    assert reasons(out) == ["Retrying"]
    assert f"exit code {code}" in out.events[0].message
    assert out.status["attempts"][0]["exitCode"] == code


def test_a_pod_deleted_by_someone_else_counts_as_a_restart() -> None:
    """The next attempt waits for the vanished pod's grace period (a force delete leaves its
    container running that long), then starts."""
    first = run([pod(1)])
    out = after(first, [])
    assert out.status["attempts"][0]["reason"] == "PodDeleted"
    assert kinds(out) == [("ensure-children", None)]
    assert cond(out, c.COND_RUNNING)["reason"] == "WaitingForVanishedRunner"
    assert out.events == ()
    grace = 30 + 10  # the runner's default grace period, plus 10 s: the pod's
    assert f"grace period ({grace} s)" in cond(out, c.COND_RUNNING)["message"]
    out = after(out, [], now=NOW + timedelta(seconds=grace - 1))
    assert ("create-pod", 2) not in kinds(out)
    out = after(out, [], now=NOW + timedelta(seconds=grace))
    assert kinds(out) == [("ensure-children", None), ("create-pod", 2)]
    assert out.status["restarts"] == 1
    assert "its pod was deleted" in out.events[0].message


def test_a_pod_the_operator_stopped_is_not_waited_for() -> None:
    out = run([pod(1)], spec_patch={"suspend": True})
    out = after(out, [pod(1, deleting=True)], spec_patch={"suspend": True})
    out = after(out, [], spec_patch={"suspend": True})
    assert out.status["attempts"][0]["stopReason"] == "Suspended"
    out = after(out, [])
    assert ("create-pod", 2) in kinds(out)


def test_restarts_are_counted_exactly_across_reconciles() -> None:
    out = run([pod(1)])
    out = after(out, [pod(1, "Failed", 137)])
    out = after(out, [pod(1, "Failed", 137), pod(2)])
    out = after(out, [pod(1, "Failed", 137)])  # pod 2 deleted
    out = after(out, [pod(1, "Failed", 137), pod(3)])
    out = after(out, [pod(1, "Failed", 137), pod(3, "Succeeded", 0)])
    assert out.phase == c.SUCCEEDED
    assert out.status["restarts"] == 2
    assert [a["index"] for a in out.status["attempts"]] == [1, 2, 3]
    again = after(out, [pod(1, "Failed", 137), pod(3, "Succeeded", 0)])
    assert again.status == {**out.status}  # a fixpoint: nothing changes on a repeat
    assert again.events == () and again.actions == ()


def test_backoff_limit_exceeded() -> None:
    pods = [pod(i, "Failed", 137) for i in range(1, 3)]
    out = run(pods, spec_patch={"backoffLimit": 1})
    assert out.phase == c.FAILED
    assert out.status["failure"]["reason"] == c.R_BACKOFF_LIMIT
    assert out.status["restarts"] == 1
    assert "2 attempts failed, backoffLimit is 1" in out.status["failure"]["message"]
    assert reasons(out) == [c.R_BACKOFF_LIMIT]
    assert out.events[0].type == "Warning"


def test_backoff_limit_zero_fails_on_the_first_crash() -> None:
    out = run([pod(1, "Failed", 70)], spec_patch={"backoffLimit": 0})
    assert out.phase == c.FAILED and out.status["restarts"] == 0


def test_suspend_stops_the_runner_then_reports_suspended_then_resumes() -> None:
    out = run([pod(1)])
    out = after(out, [pod(1)], spec_patch={"suspend": True})
    assert kinds(out) == [("delete-pods", ("demo-runner-1",))]
    assert out.phase == c.RUNNING  # not Suspended while the pod exists
    assert cond(out, c.COND_SUSPENDED)["status"] == "False"
    assert cond(out, c.COND_SUSPENDED)["reason"] == "Suspending"
    out = after(out, [pod(1, deleting=True)], spec_patch={"suspend": True})
    assert out.actions == () and out.phase == c.RUNNING
    out = after(out, [], spec_patch={"suspend": True})
    assert out.phase == c.SUSPENDED
    assert cond(out, c.COND_SUSPENDED)["status"] == "True"
    assert reasons(out) == ["Suspended"]
    out = after(out, [])
    assert kinds(out) == [("ensure-children", None), ("create-pod", 2)]
    assert reasons(out) == ["Resuming"]
    assert out.status["restarts"] == 0  # a suspend is not a failure


def test_suspend_before_the_first_attempt_creates_nothing() -> None:
    out = run(spec_patch={"suspend": True})
    assert out.actions == ()
    assert out.phase == c.SUSPENDED


def test_a_runner_ending_while_suspending_is_not_a_failure_even_unrecorded() -> None:
    """The operator died between deleting the pod and recording why: still not a failure."""
    out = run([pod(1)])
    out = after(out, [pod(1, "Failed", 143)], spec_patch={"suspend": True})
    assert out.status["attempts"][0]["stopReason"] == "Suspended"
    assert out.status["restarts"] == 0


def test_active_deadline_fails_and_stops_the_pods() -> None:
    out = run([pod(1)])
    later = NOW + timedelta(seconds=120)
    out = after(out, [pod(1)], spec_patch={"activeDeadlineSeconds": 60}, now=later)
    assert out.phase == c.FAILED
    assert out.status["failure"]["reason"] == c.R_DEADLINE
    assert kinds(out) == [("delete-pods", ("demo-runner-1",))]
    assert out.status["attempts"][0]["stopReason"] == c.R_DEADLINE
    # The stopped pod then fails: the phase stays, nothing is retried.
    out = after(out, [pod(1, "Failed", 143)], spec_patch={"activeDeadlineSeconds": 60}, now=later)
    assert out.phase == c.FAILED and out.actions == ()
    assert out.status["failure"]["reason"] == c.R_DEADLINE


def test_progress_deadline_fails_a_stalled_job() -> None:
    status = {"progress": {"lastCheckpointTime": "2026-11-30T05:10:00.000Z"}}
    out = run([pod(1)], status=status, spec_patch={"progressDeadlineSeconds": 600})
    assert out.phase == c.FAILED
    assert out.status["failure"]["reason"] == c.R_STALLED
    assert "since 2026-11-30T05:10:00Z" in out.status["failure"]["message"]
    fresh = {"progress": {"lastCheckpointTime": "2026-11-30T05:25:00.000Z"}}
    out = run([pod(1)], status=fresh, spec_patch={"progressDeadlineSeconds": 600})
    assert out.phase == c.RUNNING


def test_an_invalid_spec_fails_at_once_without_children() -> None:
    err = SpecError("spec.recipe.process", "x", "y", "spec.recipe: invalid recipe: did you mean")
    out = run(spec_error=err)
    assert out.phase == c.FAILED
    assert out.actions == ()
    assert out.status["failure"] == {
        "reason": c.R_INVALID_SPEC,
        "component": "validation",
        "message": str(err),
    }
    assert cond(out, c.COND_VALID)["status"] == "False"
    assert [(e.type, e.reason.name) for e in out.events] == [("Warning", c.R_INVALID_SPEC)]
    again = after(out, [], spec_error=err)
    assert again.events == ()  # one Warning, not one per reconcile


def test_ttl_deletes_a_finished_job() -> None:
    done = run([pod(1, "Succeeded", 0)], spec_patch={"ttlSecondsAfterFinished": 60})
    early = after(done, [pod(1, "Succeeded", 0)], spec_patch={"ttlSecondsAfterFinished": 60})
    assert early.actions == ()
    late = after(
        done,
        [pod(1, "Succeeded", 0)],
        spec_patch={"ttlSecondsAfterFinished": 60},
        now=NOW + timedelta(seconds=61),
    )
    assert kinds(late) == [("delete-job", None)]


def test_condition_transition_times_are_kept_while_unchanged() -> None:
    out = run([pod(1)])
    later = after(out, [pod(1)], now=NOW + timedelta(seconds=30))
    assert (
        cond(later, c.COND_RUNNING)["lastTransitionTime"]
        == cond(out, c.COND_RUNNING)["lastTransitionTime"]
    )
    done = after(later, [pod(1, "Succeeded", 0)], now=NOW + timedelta(seconds=60))
    assert cond(done, c.COND_RUNNING)["lastTransitionTime"] == "2026-11-30T05:31:00Z"


def test_invariant_no_terminal_phase_with_a_true_running_condition() -> None:
    for code in (0, 1, 2, 3, 4):
        out = run([pod(1, "Failed" if code else "Succeeded", code)])
        assert out.phase in c.TERMINAL_PHASES
        assert cond(out, c.COND_RUNNING)["status"] == "False"
        assert sum(cond(out, t)["status"] == "True" for t in (c.COND_SUCCEEDED, c.COND_FAILED)) <= 1


KUBERAY = {"ray": {"mode": "kuberay", "readyTimeoutSeconds": 300}}


def cluster(ready: bool, created: str = "2026-11-30T05:28:00Z") -> dict:
    head = [{"type": "HeadPodReady", "status": "True"}]
    status = {"state": "ready", "conditions": head} if ready else {}
    return {"metadata": {"name": "demo-ray", "creationTimestamp": created}, "status": status}


def test_kuberay_creates_the_cluster_then_waits_then_starts_the_runner() -> None:
    out = run(spec_patch=KUBERAY)
    assert kinds(out) == [("ensure-children", None), ("create-ray", None)]
    assert cond(out, c.COND_CLUSTER_READY)["status"] == "False"
    out = after(out, [], spec_patch=KUBERAY, cluster=cluster(False))
    assert out.actions == () and out.phase == c.STARTING
    out = after(out, [], spec_patch=KUBERAY, cluster=cluster(True))
    assert kinds(out) == [("ensure-children", None), ("create-pod", 1)]
    assert cond(out, c.COND_CLUSTER_READY)["status"] == "True"
    assert "ClusterReady" in reasons(out)


def test_kuberay_cluster_never_ready_fails_the_job_and_removes_it() -> None:
    out = run(
        spec_patch=KUBERAY,
        cluster=cluster(False, "2026-11-30T05:20:00Z"),
    )
    assert out.phase == c.FAILED
    assert out.status["failure"]["reason"] == c.R_CLUSTER_NOT_READY
    assert out.status["failure"]["component"] == "ray"
    assert kinds(out) == [("delete-ray", None)]


def test_suspend_in_kuberay_mode_removes_the_cluster_too() -> None:
    spec = {**KUBERAY, "suspend": True}
    out = run([pod(1)], spec_patch=spec, cluster=cluster(True))
    assert kinds(out) == [("delete-pods", ("demo-runner-1",)), ("delete-ray", None)]
    out = after(out, [], spec_patch=spec, cluster=None)
    assert out.phase == c.SUSPENDED
    assert cond(out, c.COND_CLUSTER_READY)["reason"] == "Released"


def test_resumed_event_once_per_attempt_with_what_was_restored() -> None:
    out = run([pod(1)])
    status = {
        **out.status,
        "progress": {"podName": "demo-runner-1", "resumedPartitions": 3, "resumedCheckpoints": 12},
    }
    out = run([pod(1)], status=status)
    assert reasons(out) == ["Resumed"]
    assert "3 partitions done, 12 checkpoints restored" in out.events[0].message
    assert out.status["attempts"][0]["resumedFrom"] == {"partitionsDone": 3, "checkpoints": 12}
    again = run([pod(1)], status={**out.status, "progress": status["progress"]})
    assert again.events == ()


# -- status.rayCluster ------------------------------------------------------------------------

HEAD_READY = {"type": "HeadPodReady", "status": "True"}


def observed_cluster(status: dict | None, groups: list[dict] | None = None) -> dict:
    spec = {"workerGroupSpecs": groups} if groups is not None else {}
    return {"metadata": {"name": "demo-ray"}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("status", "groups", "expected"),
    [
        # Not reported by KubeRay yet: the desired count comes from the groups' replicas
        # (suspended groups excluded, as KubeRay counts them).
        (None, [{"replicas": 2}, {"replicas": 1}], ("pending", False, 0, 3)),
        ({}, [{"replicas": 2}, {"replicas": 3, "suspend": True}], ("pending", False, 0, 2)),
        ({}, None, ("pending", False, 0, 0)),
        ({}, [{"groupName": "w"}], ("pending", False, 0, 0)),
        # ... kept within minReplicas..maxReplicas, times numOfHosts, as KubeRay does.
        ({}, [{"replicas": 1, "minReplicas": 3, "maxReplicas": 5}], ("pending", False, 0, 3)),
        ({}, [{"replicas": 9, "minReplicas": 1, "maxReplicas": 4}], ("pending", False, 0, 4)),
        ({}, [{"replicas": 2, "minReplicas": 5, "maxReplicas": 3}], ("pending", False, 0, 3)),
        ({}, [{"minReplicas": 2, "maxReplicas": 4}], ("pending", False, 0, 2)),
        ({}, [{"replicas": 2, "numOfHosts": 3}], ("pending", False, 0, 6)),
        # Reported, not ready yet: KubeRay omits the counts that are 0.
        (
            {"desiredWorkerReplicas": 2, "conditions": [{**HEAD_READY, "status": "False"}]},
            [{"replicas": 2}],
            ("pending", False, 0, 2),
        ),
        (
            {"desiredWorkerReplicas": 2, "readyWorkerReplicas": 1, "conditions": [HEAD_READY]},
            [{"replicas": 2}],
            ("pending", True, 1, 2),
        ),
        (
            {
                "state": "ready",
                "desiredWorkerReplicas": 2,
                "readyWorkerReplicas": 2,
                "conditions": [HEAD_READY],
            },
            [{"replicas": 2}],
            ("ready", True, 2, 2),
        ),
        # A lost head: KubeRay keeps `ready`, HeadPodReady says the head is gone.
        (
            {
                "state": "ready",
                "desiredWorkerReplicas": 1,
                "readyWorkerReplicas": 1,
                "conditions": [{**HEAD_READY, "status": "False"}],
            },
            [{"replicas": 1}],
            ("ready", False, 1, 1),
        ),
        # A worker lost, its replacement not ready yet.
        (
            {"state": "ready", "desiredWorkerReplicas": 2, "readyWorkerReplicas": 1},
            [{"replicas": 2}],
            ("ready", False, 1, 2),
        ),
        # Once KubeRay reported, an omitted desired count is 0 (not the groups' replicas).
        ({"state": "suspended"}, [{"replicas": 2}], ("suspended", False, 0, 0)),
        ({"observedGeneration": 1}, [{"replicas": 2}], ("pending", False, 0, 0)),
        ({"state": "failed", "readyWorkerReplicas": 0}, [], ("failed", False, 0, 0)),
    ],
)
def test_ray_cluster_status_is_what_kuberay_reports(
    status: dict | None, groups: list[dict] | None, expected: tuple
) -> None:
    out = ray_cluster_status(observed_cluster(status, groups))
    assert out is not None
    state, head_ready, ready, desired = expected
    assert out == {
        "name": "demo-ray",
        "state": state,
        "headReady": head_ready,
        "readyWorkers": ready,
        "desiredWorkers": desired,
        "workers": f"{ready}/{desired}",
    }


def test_no_ray_cluster_no_ray_cluster_status() -> None:
    assert ray_cluster_status(None) is None


def test_the_job_status_follows_its_ray_cluster_and_drops_it_once_gone() -> None:
    out = run(spec_patch=KUBERAY)
    assert out.status["rayCluster"] is None  # not created yet
    out = after(out, [], spec_patch=KUBERAY, cluster=cluster(False))
    assert out.status["rayCluster"]["state"] == "pending"
    ready = cluster(True)
    ready["status"].update({"desiredWorkerReplicas": 2, "readyWorkerReplicas": 2})
    out = after(out, [], spec_patch=KUBERAY, cluster=ready)
    assert out.status["rayCluster"] == {
        "name": "demo-ray",
        "state": "ready",
        "headReady": True,
        "readyWorkers": 2,
        "desiredWorkers": 2,
        "workers": "2/2",
    }
    assert out.status["children"]["rayCluster"] == "demo-ray"
    # Suspended: the cluster goes, and so does the field (None: the status patch removes it).
    spec = {**KUBERAY, "suspend": True}
    out = after(out, [], spec_patch=spec, cluster=None)
    assert out.phase == c.SUSPENDED
    assert out.status["rayCluster"] is None


def test_local_jobs_have_no_ray_cluster_status() -> None:
    out = run([pod(1)])
    assert out.status["rayCluster"] is None
    assert "rayCluster" not in out.status["children"]


def test_a_finished_job_stays_finished_when_its_spec_would_now_be_refused() -> None:
    """An edit, a tighter installation policy or an operator upgrade that refuses the spec of a
    job that has already Succeeded changes nothing that is done (review finding 4)."""
    done = run([pod(1, "Succeeded", 0)])
    assert done.phase == c.SUCCEEDED
    refused = after(
        done,
        [pod(1, "Succeeded", 0)],
        spec_error=SpecError("spec.runner.volumes[0].hostPath", "/", "no hostPath volume"),
    )
    assert refused.phase == c.SUCCEEDED
    assert refused.actions == ()
    assert "InvalidSpec" not in reasons(refused)


def test_130_suspend_cycles_keep_the_attempts_within_the_crds_max_items() -> None:
    """Each suspend stops an attempt; the records stay bounded (the first, the last 16, every
    retryable failure) and the rest are counted, so the status patch never exceeds maxItems."""
    from dj_operator.api.crd import status_schema

    max_items = status_schema()["properties"]["attempts"]["maxItems"]
    out = run()
    for attempt in range(1, 131):
        out = after(out, [pod(attempt)])  # running
        out = after(out, [pod(attempt)], spec_patch={"suspend": True})  # stopping
        out = after(out, [], spec_patch={"suspend": True})  # suspended: the pod is gone
        assert out.phase == c.SUSPENDED
        out = after(out, [])  # resumed: the next attempt is created
        assert ("create-pod", attempt + 1) in kinds(out)
    records = out.status["attempts"]
    assert len(records) <= max_items
    assert len(records) == 1 + c.ATTEMPTS_KEPT_LAST
    assert records[0]["index"] == 1 and records[-1]["index"] == 130
    assert out.status["attemptsOmitted"] == 130 - len(records)
    assert out.status["restarts"] == 0


def test_compaction_keeps_every_retryable_failure_so_the_backoff_limit_still_counts() -> None:
    """100 restarts allowed: the failures are never compacted away, or the limit would reset."""
    out = run(spec_patch={"backoffLimit": 100})
    for attempt in range(1, 102):
        out = after(out, [pod(attempt, "Failed", exit_code=137)], spec_patch={"backoffLimit": 100})
        out = after(out, [], spec_patch={"backoffLimit": 100})
    assert out.phase == c.FAILED
    assert out.status["failure"]["reason"] == c.R_BACKOFF_LIMIT
    assert len(out.status["attempts"]) == 101
    assert out.status["restarts"] == 100


def lost_pod(attempt: int, evicted: bool = True) -> dict:
    """A runner pod deleted at NOW (its grace period ended then) that no kubelet ends: its node
    stopped reporting and the taint manager evicted it."""
    p = pod(attempt, deleting=True)
    p["spec"] = {"nodeName": "node-b"}
    if evicted:
        p["status"]["conditions"] = [
            {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
        ]
    return p


def test_a_runner_pod_no_kubelet_ends_is_removed_and_the_next_attempt_starts() -> None:
    first = run([pod(1)])
    waiting = after(
        first, [lost_pod(1)], now=NOW + timedelta(seconds=c.LOST_POD_MARGIN_SECONDS - 1)
    )
    assert "force-delete-pods" not in [k for k, _ in kinds(waiting)]
    assert waiting.phase == c.RUNNING
    lost = after(waiting, [lost_pod(1)], now=NOW + timedelta(seconds=c.LOST_POD_MARGIN_SECONDS))
    assert kinds(lost) == [("force-delete-pods", ("demo-runner-1",))]
    assert lost.phase == c.RUNNING
    assert reasons(lost) == ["RunnerLost"]
    message = lost.events[0].message
    assert "demo-runner-1 on node node-b" in message and "node stopped reporting" in message
    assert lost.status["attempts"][0]["stopReason"] == c.STOP_NODE_LOST
    # Once the pod is gone, the next attempt starts at once (it was seen stopping, so nothing
    # of it runs on a node that reports), and a lost node is no failure of the job.
    gone = after(lost, [], now=NOW + timedelta(seconds=c.LOST_POD_MARGIN_SECONDS + 1))
    assert kinds(gone) == [("ensure-children", None), ("create-pod", 2)]
    assert reasons(gone) == ["Resuming"]
    assert "NodeLost" in gone.events[0].message
    done = after(gone, [pod(2, "Succeeded", exit_code=0)])
    assert done.phase == c.SUCCEEDED


def test_a_pod_removed_without_an_eviction_says_so_and_a_suspend_still_ends() -> None:
    """A stuck deletion with no eviction behind it (a deletion on a node that died) is removed
    too, and a suspend waiting for that pod completes."""
    spec = {"suspend": True}
    out = run([pod(1)], spec_patch=spec)
    stuck = lost_pod(1, evicted=False)
    out = after(out, [stuck], spec_patch=spec, now=NOW + timedelta(seconds=60))
    assert kinds(out) == [("force-delete-pods", ("demo-runner-1",))]
    assert "evicted" not in out.events[0].message
    out = after(out, [], spec_patch=spec, now=NOW + timedelta(seconds=61))
    assert out.phase == c.SUSPENDED


def test_ray_pods_no_kubelet_ends_are_removed_while_the_cluster_is_not_ready() -> None:
    """A node lost under a RayCluster: KubeRay replaces a head or worker only once its pod is
    gone, so the operator removes the evicted pods that no kubelet ends."""
    job = make_job()
    job["spec"].update(KUBERAY)
    worker = lost_pod(1)
    worker["metadata"]["name"] = "demo-ray-worker-abcde"
    head = lost_pod(1)
    head["metadata"]["name"] = "demo-ray-head-fghij"
    head["metadata"]["deletionTimestamp"] = "2026-11-30T05:29:55Z"  # its grace period ends later

    def at(seconds: int) -> Outcome:
        now = NOW + timedelta(seconds=seconds)
        ray = cluster(False, "2026-11-30T05:29:00Z")
        return derived(job, [], now, ray_cluster=ray, ray_pods=[worker, head])

    assert at(c.LOST_POD_MARGIN_SECONDS - 6).actions == ()
    out = at(c.LOST_POD_MARGIN_SECONDS)
    assert kinds(out) == [("force-delete-pods", ("demo-ray-head-fghij", "demo-ray-worker-abcde"))]
    assert out.phase == c.STARTING and reasons(out) == ["RayPodLost"]
    assert "on node node-b" in out.events[0].message


def ray_pod_left(name: str, deleted: str | None) -> dict:
    """A Ray pod of a deleted RayCluster on node-b, deleted (by the garbage collector) with its
    grace period ending at ``deleted``, or not yet deleted."""
    p = pod(1, deleting=deleted is not None)
    p["metadata"]["name"] = name
    p["metadata"]["labels"] = {"ray.io/cluster": "demo-ray"}
    if deleted is not None:
        p["metadata"]["deletionTimestamp"] = deleted
    p["spec"] = {"nodeName": "node-b"}
    return p


@pytest.mark.parametrize(
    ("status", "spec_patch", "then"),
    [
        ({"phase": c.SUCCEEDED, "completionTime": "2026-11-30T05:20:00Z"}, {}, "finished"),
        ({"phase": c.SUSPENDED}, {"suspend": True}, "suspended"),
    ],
)
def test_a_finished_or_suspended_job_removes_its_ray_pods_no_kubelet_ends(
    status: dict, spec_patch: dict, then: str
) -> None:
    """The job's RayCluster is deleted, and its pods on a lost node stay: no kubelet ends them,
    and KubeRay is no longer there to care. The operator removes them, as it does while a
    cluster is not ready."""
    job = make_job(status=status)
    job["spec"].update({**KUBERAY, **spec_patch})
    stuck = ray_pod_left("demo-ray-worker-abcde", "2026-11-30T05:29:50Z")
    waiting = ray_pod_left("demo-ray-head-fghij", None)  # the collector has not deleted it yet

    def at(seconds: int) -> Outcome:
        now = datetime(2026, 11, 30, 5, 29, 50, tzinfo=UTC) + timedelta(seconds=seconds)
        return derived(job, [], now, ray_cluster=None, ray_pods=[stuck, waiting])

    early = at(c.LOST_POD_MARGIN_SECONDS - 1)
    assert early.actions == () and early.phase == status["phase"]
    out = at(c.LOST_POD_MARGIN_SECONDS)
    assert kinds(out) == [("force-delete-pods", ("demo-ray-worker-abcde",))]
    assert out.phase == status["phase"] and reasons(out) == ["RayPodLost"]
    assert (
        "on node node-b" in out.events[0].message and f"the job is {then}" in out.events[0].message
    )
