"""``EventType`` names every event type the runner writes: each literal type passed to a
logger in the source is a member, and every member's value is its JSONL string."""

from __future__ import annotations

import ast
from pathlib import Path

from dj_runner.observe.event_log import KNOWN_EVENT_TYPES, Event, EventType

RUNNER = Path(__file__).resolve().parents[2] / "runner" / "dj_runner"
LOGGERS = {"log", "_log"}


def written_types() -> set[str]:
    """The first argument of every ``*.log("...")`` / ``*._log("...")`` call in the runner."""
    found: set[str] = set()
    for path in RUNNER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            first = node.args[0]
            if name in LOGGERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def test_every_written_event_type_is_an_event_type():
    written = written_types()
    assert len(written) >= 20  # the scan finds the loggers' calls
    assert written - KNOWN_EVENT_TYPES == set()


def test_members_are_their_strings_and_events_read_back_as_members():
    assert EventType.OPERATION_ERROR is EventType.OP_FAILED
    assert EventType("op_failed") == "op_failed"
    ev = Event.from_dict({"event_type": "op_failed", "timestamp": 1.0, "error_message": "x"})
    assert ev.event_type is EventType.OP_FAILED and ev.event_type.value == "op_failed"
    assert ev.error_message == "x" and ev.operation_name is None
    assert ev.to_dict()["event_type"] == "op_failed" and type(ev.to_dict()["event_type"]) is str
    built = Event("job_start", 1.0, "", "", "j")
    assert built.event_type is EventType.JOB_START
    unknown = Event.from_dict({"event_type": "from_a_newer_runner", "timestamp": 1.0})
    assert unknown.event_type == "from_a_newer_runner"
