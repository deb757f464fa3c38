"""Every Event the operator can post has a reason of the published catalog, with its type.

The reconcile posts ``EventDraft``s, whose reason is an ``EventReason`` member: a reason outside
the catalog cannot be written. What is still named by a string is a failure reason
(``status.failure.reason``), posted as the Event of a Failed job: each must be a catalog Warning.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from operator_fixtures import make_job, pod

from dj_operator.api import constants as c
from dj_operator.api.types import parse_spec
from dj_operator.events_catalog import CATALOG, EventCorrelator, EventReason, ObjectRef, reason
from dj_operator.status import decide
from dj_operator.status.decide import EventDraft, Observed
from dj_operator.status.derive import derive
from dj_runner.contract import ExitCode


def test_an_event_draft_takes_only_a_catalog_reason() -> None:
    draft = EventDraft(EventReason.Retrying, "attempt 1 ended")
    assert (draft.type, draft.reason.name) == ("Warning", "Retrying")
    with pytest.raises(TypeError, match="EventReason of the catalog, not 'Retrying'"):
        EventDraft("Retrying", "attempt 1 ended")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", [*c.FAILURE_REASONS, *decide.TERMINAL_MESSAGES, "PartiallySucceeded", "Retrying"]
)
def test_every_failure_reason_is_a_catalog_warning(name: str) -> None:
    assert reason(name).type == "Warning"


def test_an_unknown_reason_name_is_refused_with_the_catalog_named() -> None:
    with pytest.raises(ValueError, match=r"'Failed' is not in the published catalog.*Created"):
        reason("Failed")


def test_the_catalog_maps_each_name_to_its_member() -> None:
    assert {member.name: member for member in EventReason} == CATALOG
    assert CATALOG["ChildConflict"] is EventReason.ChildConflict
    body = EventCorrelator().decide(
        ObjectRef("datajuicer.io/v1alpha1", "DataJuicerJob", "ns", "j", "u"),
        EventReason.Suspended,
        "stopped",
        0.0,
    )
    assert body.body["reason"] == "Suspended" and body.body["type"] == "Normal"  # type: ignore[union-attr]


def test_a_failed_job_posts_its_failure_reason_as_a_warning() -> None:
    """Each way a job fails posts one Warning whose reason is the status's failure reason."""
    now = datetime(2026, 11, 30, 5, 30, tzinfo=UTC)
    job = make_job()
    job["status"] = {"phase": c.RUNNING}
    ended = pod(1, phase="Failed", exit_code=ExitCode.REFUSED)
    out = derive(
        Observed(job=job, spec=parse_spec(job["spec"]), spec_error=None, pods=[ended], now=now)
    )
    assert out.status["failure"]["reason"] == c.R_RESUME_REFUSED
    assert [(e.type, e.reason) for e in out.events] == [("Warning", EventReason.ResumeRefused)]
