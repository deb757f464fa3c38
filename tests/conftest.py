"""Shared fixtures. Kubernetes: `k8s_cluster` (session) and `namespace` (per test).

With ``DJ_TESTS_NO_SKIP=1`` (what `make test`, and so CI, sets) a skipped test is reported as a
failure: a test that needs something the machine lacks (the Kubernetes binaries, `unshare`, an
environment without a package) must run in CI, never pass there by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.fixtures import add_cluster_logs, k8s_cluster, namespace

__all__ = ["k8s_cluster", "namespace"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    add_cluster_logs(item, report)
    _no_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _no_skip(report)


NO_SKIP_ENV = "DJ_TESTS_NO_SKIP"


def _no_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under DJ_TESTS_NO_SKIP=1, turn a skip (not an expected failure) into a failure."""
    if os.environ.get(NO_SKIP_ENV) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"skipped, but {NO_SKIP_ENV}=1 requires every test to run: {reason}"
