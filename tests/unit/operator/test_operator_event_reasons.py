"""Every Event the operator can post has a reason of the published catalog, with its type.

The recorder refuses a reason outside the catalog, so a reason missing from it would silently
lose that Event; this test reads the operator's source for every reason it can pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

from dj_operator.api import constants as c
from dj_operator.events_catalog import CATALOG
from dj_operator.status import derive

OPERATOR = Path(derive.__file__).resolve().parents[1]


def _literal_events() -> list[tuple[str, str, str]]:
    """(file, type, reason) of each ``Event("Type", "Reason", ...)`` and each
    ``("Type", "Reason", message)`` tuple built in the operator's source."""
    found = []
    for path in sorted(OPERATOR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            args: list[ast.expr] = []
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Event":
                args = list(node.args)
            elif isinstance(node, ast.Tuple) and len(node.elts) == 3:
                args = list(node.elts)
            if (
                len(args) >= 2
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args[:2])
                and args[0].value in ("Normal", "Warning")  # type: ignore[attr-defined]
            ):
                found.append((path.name, args[0].value, args[1].value))  # type: ignore[attr-defined]
    return found


def test_the_source_posts_events_at_all():
    reasons = {r for _, _, r in _literal_events()}
    assert {"Created", "Started", "Succeeded", "Suspended", "ClusterReady"} <= reasons


def test_every_literal_event_has_a_catalog_reason_and_its_type():
    for where, type_, reason in _literal_events():
        assert reason in CATALOG, f"{where}: reason {reason!r} is not in the catalog"
        assert CATALOG[reason].type == type_, f"{where}: {reason} is {CATALOG[reason].type}"


def test_every_failure_reason_is_a_catalog_warning():
    reasons = {v for k, v in vars(c).items() if k.startswith("R_")}
    reasons |= set(derive._TERMINAL_MESSAGES)
    reasons |= {"ChildConflict", "Retrying", "PartiallySucceeded"}
    for reason in reasons:
        assert reason in CATALOG, reason
        assert CATALOG[reason].type == "Warning", reason
