"""Shared fixtures. Kubernetes: `k8s_cluster` (session) and `namespace` (per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.fixtures import add_cluster_logs, k8s_cluster, namespace

__all__ = ["k8s_cluster", "namespace"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    add_cluster_logs(item, outcome.get_result())
