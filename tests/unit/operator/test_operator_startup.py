"""No failure is silent: refused creates, pods that cannot start, the startup deadline, the
recipe read once. Pure: the observation in, the status, actions and Events out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from operator_fixtures import derived, make_job, pod

from dj_operator.api import constants as c
from dj_operator.api.types import SpecError, parse_spec
from dj_operator.kube import api_message
from dj_operator.main import defaults_from_env
from dj_operator.status.decide import Observed
from dj_operator.status.derive import Outcome, derive
from dj_operator.status.runner_events import crossed
from dj_operator.status.startup import Refusal, pod_blocker

POD1_CREATED = datetime(2026, 11, 30, 5, 1, tzinfo=UTC)
SOON = POD1_CREATED + timedelta(seconds=20)


def observe(
    pods: list[dict] = (),  # type: ignore[assignment]
    status: dict | None = None,
    now: datetime = SOON,
    spec_patch: dict | None = None,
    **kw: Any,
) -> Outcome:
    job = make_job(status=status)
    job["spec"].update(spec_patch or {})
    return derived(job, pods, now, **kw)


def cond(out: Outcome, ctype: str) -> dict:
    return next(x for x in out.status["conditions"] if x["type"] == ctype)


def waiting(attempt: int, reason: str, message: str, init: bool = False) -> dict:
    p = pod(attempt, phase="Pending")
    key = "initContainerStatuses" if init else "containerStatuses"
    p["status"][key] = [
        {"name": "runner", "state": {"waiting": {"reason": reason, "message": message}}}
    ]
    return p


def unschedulable(attempt: int) -> dict:
    p = pod(attempt, phase="Pending")
    p["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Insufficient cpu.",
        }
    ]
    return p


# -- API refusals ----------------------------------------------------------------------------


def test_an_invalid_pod_422_fails_the_job_with_the_api_servers_message() -> None:
    refusal = Refusal(422, "Pod", "demo-runner-1", 'spec.volumes[1].name: Duplicate value: "data"')
    out = observe(refusal=refusal)
    assert out.phase == c.FAILED
    assert out.status["failure"]["reason"] == c.R_POD_CREATE_FAILED
    assert out.status["failure"]["component"] == "operator"
    assert 'Duplicate value: "data"' in out.status["failure"]["message"]
    assert "Pod demo-runner-1 (422)" in out.status["failure"]["message"]
    assert [e.reason.name for e in out.events] == [c.R_POD_CREATE_FAILED]
    assert not [a for a in out.actions if a.kind.startswith("create")]


def test_a_forbidden_create_blocks_posts_an_event_and_backs_off() -> None:
    refusal = Refusal(403, "Pod", "demo-runner-1", "exceeded quota: q, requested: cpu=2")
    out = observe(refusal=refusal)
    assert out.phase == c.PENDING
    blocked = cond(out, c.COND_BLOCKED)
    assert (blocked["status"], blocked["reason"]) == ("True", c.B_CREATE_FORBIDDEN)
    assert "exceeded quota" in blocked["message"]
    assert [e.reason.name for e in out.events] == ["CreateForbidden"]
    backoff = out.status["createBackoff"]
    assert backoff["refusals"] == 1
    assert backoff["retryTime"] == "2026-11-30T05:01:30Z"  # 10 s after
    # Within the backoff: nothing is created, the condition stays, no Event again.
    later = observe(status=out.status, now=SOON + timedelta(seconds=5))
    assert not [a for a in later.actions if a.kind.startswith("create")]
    assert cond(later, c.COND_BLOCKED)["status"] == "True"
    assert later.events == ()
    # Past it: the create is tried again; refused again, the wait doubles.
    retry = observe(status=out.status, now=SOON + timedelta(seconds=11))
    assert ("create-pod", 1) in [(a.kind, a.attempt) for a in retry.actions]
    again = observe(status=out.status, now=SOON + timedelta(seconds=11), refusal=refusal)
    assert again.status["createBackoff"]["refusals"] == 2
    assert again.status["createBackoff"]["retryTime"] == "2026-11-30T05:01:51Z"  # 20 s after


def test_a_create_that_passes_after_a_refusal_clears_the_backoff() -> None:
    refused = observe(refusal=Refusal(403, "Pod", "demo-runner-1", "forbidden"))
    status = refused.status
    created = observe([pod(1, phase="Running")], status=status, now=SOON + timedelta(seconds=30))
    assert created.status["createBackoff"] is None
    assert cond(created, c.COND_BLOCKED)["status"] == "False"


def test_forbidden_past_the_startup_deadline_fails_the_job() -> None:
    refusal = Refusal(403, "Pod", "demo-runner-1", "violates PodSecurity restricted")
    first = observe(refusal=refusal, spec_patch={"startupDeadlineSeconds": 60})
    later = observe(
        status=first.status,
        now=SOON + timedelta(seconds=61),
        refusal=refusal,
        spec_patch={"startupDeadlineSeconds": 60},
    )
    assert later.phase == c.FAILED
    assert later.status["failure"]["reason"] == c.R_STARTUP_DEADLINE
    assert "violates PodSecurity restricted" in later.status["failure"]["message"]


# -- pods that do not start ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_pod", "reason", "words"),
    [
        (
            waiting(1, "ImagePullBackOff", 'Back-off pulling image "nope:1"'),
            "ImagePullBackOff",
            "nope:1",
        ),
        (waiting(1, "ErrImagePull", "not found"), "ErrImagePull", "not found"),
        (
            waiting(1, "CreateContainerConfigError", "couldn't find key token in Secret ns1/s"),
            "CreateContainerConfigError",
            "key token",
        ),
        (
            waiting(1, "CreateContainerConfigError", "secret missing", init=True),
            "CreateContainerConfigError",
            "secret missing",
        ),
        (unschedulable(1), "Unschedulable", "Insufficient cpu"),
    ],
)
def test_a_pod_that_cannot_start_says_why(the_pod: dict, reason: str, words: str) -> None:
    out = observe([the_pod])
    assert out.phase == c.STARTING
    blocked = cond(out, c.COND_BLOCKED)
    assert (blocked["status"], blocked["reason"]) == ("True", reason)
    assert words in blocked["message"] and "demo-runner-1" in blocked["message"]
    assert (
        words in cond(out, c.COND_RUNNING)["message"]
        or reason in cond(out, c.COND_RUNNING)["message"]
    )
    assert [e.reason.name for e in out.events] == ["PodBlocked"]
    # Posted once, not on every reconcile.
    assert observe([the_pod], status=out.status).events == ()


def test_a_pod_on_its_way_is_not_blocked() -> None:
    creating = waiting(1, "ContainerCreating", "")
    assert pod_blocker(creating) is None
    out = observe([creating])
    assert cond(out, c.COND_BLOCKED)["status"] == "False"
    assert "ContainerCreating" in cond(out, c.COND_RUNNING)["message"]


def test_a_runner_pod_not_running_past_the_startup_deadline_fails_the_job() -> None:
    stuck = waiting(1, "ImagePullBackOff", 'Back-off pulling image "nope:1"')
    before = observe([stuck], now=POD1_CREATED + timedelta(seconds=599))
    assert before.phase == c.STARTING
    out = observe([stuck], status=before.status, now=POD1_CREATED + timedelta(seconds=601))
    assert out.phase == c.FAILED
    assert out.status["failure"]["reason"] == c.R_STARTUP_DEADLINE
    assert "startupDeadlineSeconds (600 s)" in out.status["failure"]["message"]
    assert "nope:1" in out.status["failure"]["message"]
    assert ("delete-pods", ("demo-runner-1",)) in [(a.kind, a.pods) for a in out.actions]


def test_the_startup_deadline_default_comes_from_the_installation() -> None:
    defaults = defaults_from_env({"DJ_STARTUP_DEADLINE_SECONDS": "120"})
    job = make_job()
    assert parse_spec(job["spec"], defaults).startup_deadline_seconds == 120
    job["spec"]["startupDeadlineSeconds"] = 30
    assert parse_spec(job["spec"], defaults).startup_deadline_seconds == 30
    with pytest.raises(ValueError, match=r"DJ_STARTUP_DEADLINE_SECONDS: got '5'; expected seconds"):
        defaults_from_env({"DJ_STARTUP_DEADLINE_SECONDS": "5"})


def test_a_blocked_ray_pod_is_reported_on_the_job() -> None:
    head = waiting(1, "ImagePullBackOff", 'Back-off pulling image "rayproject/ray:nope"')
    head["metadata"]["name"] = "demo-ray-head-x"
    cluster = {
        "metadata": {"name": "demo-ray", "creationTimestamp": "2026-11-30T05:01:00Z"},
        "status": {"state": "pending"},
    }
    out = observe(spec_patch={"ray": {"mode": "kuberay"}}, ray_cluster=cluster, ray_pods=[head])
    assert out.phase == c.STARTING
    blocked = cond(out, c.COND_BLOCKED)
    assert blocked["reason"] == "ImagePullBackOff" and "demo-ray-head-x" in blocked["message"]
    assert "rayproject/ray:nope" in cond(out, c.COND_RUNNING)["message"]
    assert [e.reason.name for e in out.events] == ["PodBlocked"]


# -- finding 13 ------------------------------------------------------------------------------


def test_a_running_pod_that_is_stopping_is_still_running() -> None:
    running = observe([pod(1, phase="Running")])
    stopping = observe([pod(1, phase="Running", deleting=True)], status=running.status)
    assert stopping.phase == c.RUNNING
    assert cond(stopping, c.COND_RUNNING)["reason"] == "RunnerStopping"


# -- findings 4 and 5: recipeFrom ------------------------------------------------------------


def test_a_runner_that_exited_0_is_succeeded_even_with_its_recipe_source_gone() -> None:
    done = pod(1, phase="Succeeded", exit_code=0)
    out = observe(
        [done],
        status={"phase": c.RUNNING, "startTime": "2026-11-30T05:01:00Z"},
        recipe_source_missing="waiting for ConfigMap r with key recipe.yaml (spec.recipeFrom)",
    )
    assert out.phase == c.SUCCEEDED


def test_a_running_job_whose_recipe_source_is_missing_stays_running() -> None:
    out = observe(
        [pod(1, phase="Running")],
        status={"phase": c.RUNNING, "startTime": "2026-11-30T05:01:00Z"},
        recipe_source_missing="waiting for ConfigMap r with key recipe.yaml (spec.recipeFrom)",
    )
    assert out.phase == c.RUNNING


def test_the_recipe_hash_is_in_status_and_kept_once_finished() -> None:
    out = observe([pod(1, phase="Running")], recipe_hash="sha256:abc")
    assert out.status["recipeHash"] == "sha256:abc"
    done = observe(
        [pod(1, phase="Succeeded", exit_code=0)],
        status={**out.status, "phase": c.SUCCEEDED},
        recipe_hash="sha256:edited",
    )
    assert done.status["recipeHash"] == "sha256:abc"


def test_active_deadline_does_not_count_suspended_time() -> None:
    spec = {"activeDeadlineSeconds": 600}
    started = {"phase": c.RUNNING, "startTime": "2026-11-30T05:01:00Z"}
    t0 = POD1_CREATED
    suspending = observe(
        [pod(1, phase="Running")],
        status=started,
        now=t0 + timedelta(seconds=60),
        spec_patch={**spec, "suspend": True},
    )
    assert suspending.status["suspendedSince"] == "2026-11-30T05:02:00Z"
    suspended = observe(
        [],
        status=suspending.status,
        now=t0 + timedelta(seconds=70),
        spec_patch={**spec, "suspend": True},
    )
    assert suspended.phase == c.SUSPENDED
    assert suspended.status["suspendedSince"] == "2026-11-30T05:02:00Z"
    # Resumed an hour later: 3600 s suspended, 60 s run; the deadline (600 s) is not passed.
    resumed = observe(
        [], status=suspended.status, now=t0 + timedelta(seconds=3660), spec_patch=spec
    )
    assert resumed.phase != c.FAILED
    assert resumed.status["suspendedSince"] is None
    assert resumed.status["suspendedSeconds"] == 3600
    # 541 s of running after the resume: 601 s in all.
    late = observe(
        [pod(2, phase="Running")],
        status={**resumed.status, "phase": c.RUNNING},
        now=t0 + timedelta(seconds=3660 + 541),
        spec_patch=spec,
    )
    assert late.phase == c.FAILED
    assert late.status["failure"]["reason"] == c.R_DEADLINE


# -- the runner's events ---------------------------------------------------------------------


def progress_of(pod_name: str = "demo-runner-1", **fields: Any) -> dict:
    return {"podName": pod_name, "partitionsTotal": 100, **fields}


def runner_event_reasons(out: Outcome) -> list[str]:
    return [
        e.reason.name
        for e in out.events
        if e.reason.name in ("PartitionsFailed", "PartitionRetrying", "CheckpointStale")
    ]


def test_partition_failures_post_one_event_raised_at_powers_of_two() -> None:
    status: dict = {"phase": c.RUNNING, "startTime": "2026-11-30T05:01:00Z"}
    posted = []
    error = {"op": "flaky_mapper", "partition": 3, "message": "boom"}
    for failed in range(1, 101):
        status["progress"] = progress_of(partitionsFailed=failed, error=error)
        out = observe([pod(1, phase="Running")], status=status)
        posted += [(failed, e) for e in out.events if e.reason.name == "PartitionsFailed"]
        status = {**out.status, "progress": status["progress"]}
    assert [n for n, _ in posted] == [1, 2, 4, 8, 16, 32, 64]
    # One message: the recorder raises one Event's count instead of creating seven.
    assert len({e.message for _, e in posted}) == 1
    assert "attempt 1: partitions failed after their retries" in posted[0][1].message
    assert "the first: partition 3, op flaky_mapper: boom" in posted[0][1].message
    assert status["attempts"][0]["reported"]["partitionsFailed"] == 100


def test_retries_post_aggregated_events_and_a_restart_does_not_post_again() -> None:
    status: dict = {
        "phase": c.RUNNING,
        "progress": progress_of(retries={"count": 3, "partition": 7, "message": "worker died"}),
    }
    out = observe([pod(1, phase="Running")], status=status)
    assert runner_event_reasons(out) == ["PartitionRetrying"]
    assert "attempt 1 retries partitions" in next(
        e.message for e in out.events if e.reason.name == "PartitionRetrying"
    )
    # The next reconcile (or a restarted operator) reads what was reported from the status.
    again = observe(
        [pod(1, phase="Running")], status={**out.status, "progress": status["progress"]}
    )
    assert runner_event_reasons(again) == []


def test_a_previous_attempts_report_posts_nothing_for_the_next() -> None:
    status = {"phase": c.RUNNING, "progress": progress_of("demo-runner-1", partitionsFailed=5)}
    out = observe([pod(1, phase="Failed", exit_code=137), pod(2, phase="Running")], status=status)
    # The report is attempt 1's: posted once, on attempt 1, not again for attempt 2.
    assert [r.get("reported") for r in out.status["attempts"]] == [{"partitionsFailed": 5}, None]


def test_a_stale_checkpoint_warns_once_before_the_progress_deadline() -> None:
    spec = {"progressDeadlineSeconds": 600}
    status = {
        "phase": c.RUNNING,
        "progress": progress_of(lastCheckpointTime="2026-11-30T05:02:00Z"),
    }
    at = datetime(2026, 11, 30, 5, 2, tzinfo=UTC)
    early = observe([pod(1)], status=status, now=at + timedelta(seconds=299), spec_patch=spec)
    assert runner_event_reasons(early) == []
    late = observe([pod(1)], status=status, now=at + timedelta(seconds=301), spec_patch=spec)
    assert runner_event_reasons(late) == ["CheckpointStale"]
    message = next(e.message for e in late.events if e.reason.name == "CheckpointStale")
    assert "no checkpoint committed for 301 s" in message and "05:12:00Z" in message
    later = observe(
        [pod(1)],
        status={**late.status, "progress": status["progress"]},
        now=at + timedelta(seconds=400),
        spec_patch=spec,
    )
    assert runner_event_reasons(later) == []


def test_resumed_says_where_it_starts() -> None:
    progress = progress_of(
        resumedPartitions=20,
        resumedCheckpoints=60,
        checkpoint={"summary": "20/40 partitions after op 3 clean_links_mapper"},
    )
    out = observe(
        [pod(2, phase="Running")],
        status={"phase": c.RUNNING, "progress": {**progress, "podName": "demo-runner-2"}},
    )
    resumed = [e.message for e in out.events if e.reason.name == "Resumed"]
    assert resumed and "it starts from 20/40 partitions after op 3 clean_links_mapper" in resumed[0]


# -- finding 4: an edit the operator refuses mid-run ------------------------------------------


def observe_invalid(pods: list[dict], status: dict) -> Outcome:
    job = make_job(status=status)
    return derive(
        Observed(
            job=job,
            spec=None,
            spec_error=SpecError("spec.runner.image", "", "a non-empty image"),
            pods=pods,
            now=SOON,
        )
    )


def test_an_invalid_edit_mid_run_keeps_the_running_attempt_and_says_so() -> None:
    status = {"phase": c.RUNNING, "startTime": "2026-11-30T05:01:00Z"}
    out = observe_invalid([pod(1, phase="Running")], status)
    assert out.phase == c.RUNNING
    assert not [a for a in out.actions if a.kind == "delete-pods"]
    valid = cond(out, c.COND_VALID)
    assert valid["status"] == "False" and "spec.runner.image" in valid["message"]
    assert [e.reason.name for e in out.events] == ["InvalidSpec"]
    # Said once.
    again = observe_invalid([pod(1, phase="Running")], {**out.status})
    assert again.events == ()


def test_a_runner_that_exits_0_after_an_invalid_edit_succeeds() -> None:
    status = {"phase": c.RUNNING, "startTime": "2026-11-30T05:01:00Z"}
    out = observe_invalid([pod(1, phase="Succeeded", exit_code=0)], status)
    assert out.phase == c.SUCCEEDED


def test_an_invalid_spec_before_any_attempt_still_fails() -> None:
    out = observe_invalid([], {})
    assert out.phase == c.FAILED and out.status["failure"]["reason"] == c.R_INVALID_SPEC


def test_the_api_servers_message_is_read_from_its_status_body() -> None:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = (
        '{"kind":"Status","message":"Pod \\"x\\" is invalid: spec.volumes[0].name: Required value"}'
    )
    assert api_message(exc) == 'Pod "x" is invalid: spec.volumes[0].name: Required value'
    exc.body = "not json"
    assert api_message(exc) == "Unprocessable Entity"


@pytest.mark.parametrize(
    ("old", "new", "posted"),
    [
        (0, 1, True),
        (1, 1, False),
        (1, 2, True),
        (2, 3, False),
        (3, 4, True),
        (4, 7, False),
        (5, 9, True),
    ],
)
def test_runner_events_step_at_powers_of_two(old: int, new: int, posted: bool) -> None:
    assert crossed(old, new) is posted
