"""`dj-operator run` refuses a missing scope and bad values before touching any cluster."""

from __future__ import annotations

import pytest

from dj_operator.main import build_parser, main


def test_a_scope_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "--namespace NS" in capsys.readouterr().err


def test_resync_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-n", "x", "--resync-seconds", "0"]) == 2
    assert "--resync-seconds must be > 0, got 0.0" in capsys.readouterr().err


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "-n", "a", "--all-namespaces"])


def test_repeatable_namespaces() -> None:
    args = build_parser().parse_args(["run", "-n", "a", "-n", "b", "--liveness-port", "8080"])
    assert args.namespace == ["a", "b"] and args.liveness_port == 8080
