"""`dj-operator run` refuses a missing scope and bad values before touching any cluster."""

from __future__ import annotations

import pytest

from dj_operator.main import build_parser, main


def test_a_scope_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "--namespace NS" in capsys.readouterr().err


def test_there_is_no_resync_interval_to_set() -> None:
    """Reconciles are driven by watches and per-job timers; no pass over every job exists."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "-n", "x", "--resync-seconds", "5"])


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "-n", "a", "--all-namespaces"])


def test_repeatable_namespaces() -> None:
    args = build_parser().parse_args(["run", "-n", "a", "-n", "b", "--liveness-port", "8080"])
    assert args.namespace == ["a", "b"] and args.liveness_port == 8080


def test_installation_defaults_from_the_environment() -> None:
    from operator_fixtures import make_job

    from dj_operator.api.types import parse_spec
    from dj_operator.main import defaults_from_env

    defaults = defaults_from_env(
        {
            "DJ_RUNNER_IMAGE": "reg.example/dj:1",
            "DJ_RAY_IMAGE": "",
            "DJ_RUNNER_POD_SECURITY_CONTEXT": '{"runAsNonRoot": true}',
            "DJ_RUNNER_SECURITY_CONTEXT": "null",
        }
    )
    spec = parse_spec(make_job()["spec"], defaults)
    assert spec.runner.image == "reg.example/dj:1"
    assert spec.runner.pod_security_context == {"runAsNonRoot": True}
    assert spec.runner.security_context is None
    assert spec.ray.image is None
    job = make_job()
    job["spec"]["runner"]["image"] = "mine:2"
    assert parse_spec(job["spec"], defaults).runner.image == "mine:2"  # the job's own wins
    with pytest.raises(ValueError, match="DJ_RUNNER_SECURITY_CONTEXT: got '\\[1\\]'"):
        defaults_from_env({"DJ_RUNNER_SECURITY_CONTEXT": "[1]"})


def test_the_runners_metrics_port_default_and_override() -> None:
    from operator_fixtures import make_job

    from dj_operator.api.types import SpecError, parse_spec
    from dj_operator.main import defaults_from_env

    assert parse_spec(make_job()["spec"], defaults_from_env({})).runner.metrics_port == 0
    defaults = defaults_from_env({"DJ_RUNNER_METRICS_PORT": "9090"})
    assert parse_spec(make_job()["spec"], defaults).runner.metrics_port == 9090
    job = make_job()
    job["spec"]["runner"]["metricsPort"] = 0  # this job serves none
    assert parse_spec(job["spec"], defaults).runner.metrics_port == 0
    job["spec"]["runner"]["metricsPort"] = 70000
    with pytest.raises(SpecError, match=r"spec\.runner\.metricsPort.*70000.*1-65535"):
        parse_spec(job["spec"], defaults)
    for bad in ("http", "-1", "65536"):
        with pytest.raises(ValueError, match=f"DJ_RUNNER_METRICS_PORT: got '{bad}'"):
            defaults_from_env({"DJ_RUNNER_METRICS_PORT": bad})
