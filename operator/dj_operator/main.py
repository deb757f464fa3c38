"""Entry point of ``dj-operator``: `dj-operator run [--namespace NS ...] [--all-namespaces]`.

The kubeconfig comes from KUBECONFIG (or ~/.kube/config), else the in-cluster configuration.
SIGTERM and SIGINT stop it cleanly (kopf's own signal handling).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping

from dj_operator.api.constants import (
    DEFAULT_NODE_LOST_TOLERATION_SECONDS,
    DEFAULT_RUNNER_IMAGE,
    DEFAULT_STARTUP_DEADLINE_SECONDS,
    NODE_LOST_TOLERATION_ENV,
    STARTUP_DEADLINE_ENV,
)
from dj_operator.api.types import OperatorDefaults
from dj_operator.policy import policy_from_env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dj-operator", description="The DataJuicerJob operator (kopf)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator until SIGTERM")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; kopf globs allowed)",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument("--liveness-port", type=int, help="serve /healthz on this port")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser


def _run(args: argparse.Namespace) -> int:
    import kopf

    from dj_operator.handlers import kopf_handlers
    from dj_operator.handlers.kopf_handlers import State

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    namespaces = tuple(args.namespace)
    if not namespaces and not args.all_namespaces:
        print("dj-operator: give --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
        return 2
    try:
        State.defaults = defaults_from_env(os.environ)
    except ValueError as exc:
        print(f"dj-operator: {exc}", file=sys.stderr)
        return 2
    State.namespaces = namespaces
    if args.metrics_port:
        from dj_operator.metrics import serve_metrics

        serve_metrics(args.metrics_port)
    del kopf_handlers  # imported for its registrations
    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz"
        if args.liveness_port
        else None,
    )
    return 0


def defaults_from_env(env: Mapping[str, str]) -> OperatorDefaults:
    """The installation's defaults for the pods the operator creates and its policy (the
    DJ_POLICY_* variables of dj_operator.policy.SETTINGS); see docs/operator.md."""

    def context(name: str) -> dict | None:
        text = env.get(name, "").strip()
        if not text or text == "null":
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{name}: got {text!r}; expected a JSON object ({exc})") from exc
        if not isinstance(value, dict):
            raise ValueError(f"{name}: got {text!r}; expected a JSON object")
        return value or None

    port_text = env.get("DJ_RUNNER_METRICS_PORT", "").strip() or "0"
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(
            f"DJ_RUNNER_METRICS_PORT: got {port_text!r}; expected a port in 1-65535, or 0 for none"
        )
    deadline_text = env.get(STARTUP_DEADLINE_ENV, "").strip() or str(
        DEFAULT_STARTUP_DEADLINE_SECONDS
    )
    if not deadline_text.isdigit() or not 10 <= int(deadline_text) <= 86400:
        raise ValueError(
            f"{STARTUP_DEADLINE_ENV}: got {deadline_text!r}; expected seconds in 10-86400"
        )
    lost_text = env.get(NODE_LOST_TOLERATION_ENV, "").strip() or str(
        DEFAULT_NODE_LOST_TOLERATION_SECONDS
    )
    if not lost_text.isdigit() or int(lost_text) > 86400:
        raise ValueError(
            f"{NODE_LOST_TOLERATION_ENV}: got {lost_text!r}; expected seconds in 0-86400"
        )
    return OperatorDefaults(
        startup_deadline_seconds=int(deadline_text),
        node_lost_toleration_seconds=int(lost_text),
        runner_metrics_port=int(port_text),
        runner_image=env.get("DJ_RUNNER_IMAGE") or DEFAULT_RUNNER_IMAGE,
        ray_image=env.get("DJ_RAY_IMAGE") or None,
        pod_security_context=context("DJ_RUNNER_POD_SECURITY_CONTEXT"),
        security_context=context("DJ_RUNNER_SECURITY_CONTEXT"),
        policy=policy_from_env(env),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
