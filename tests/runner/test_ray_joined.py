"""A cluster lost right after the runner joined it (its head died between the connect and the
first calls) is Ray lost (exit 7, retried), not a bad address or input (exit 2)."""

from __future__ import annotations

import time

import pytest
import ray

from dj_runner import contract
from dj_runner.engine import ray_env
from dj_runner.engine.executor import _exit_code_for
from dj_runner.errors import RayUnavailable


def closed_channel(*args: object, **kwargs: object) -> None:
    raise ValueError("Cannot invoke RPC on closed channel!")


@pytest.mark.parametrize("call", ["nodes", "cluster_resources"])
def test_a_closed_channel_right_after_joining_is_ray_unavailable(
    monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    monkeypatch.setenv(contract.ENV_RAY_MIN_NODES, "2")
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, call, closed_channel)
    with pytest.raises(RayUnavailable, match="closed channel") as raised:
        ray_env._joined("address 'ray://head:10001'", time.monotonic() + 5, "ray://x", "client")
    assert _exit_code_for(raised.value) == contract.ExitCode.RAY_UNAVAILABLE


def test_a_cluster_joined_whole_gives_its_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.ENV_RAY_MIN_NODES, "2")
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 3.0})
    conn = ray_env._joined("address 'ray://head:10001'", time.monotonic() + 5, "ray://x", "client")
    assert (conn.cpus, conn.mode) == (3, "client")
