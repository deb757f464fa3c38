"""Ray addresses: parsing, bounded reachability, ``auto`` on a stale address file, and the sweep
of sessions left by killed runners. No Ray is started here."""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time

import pytest

from dj_runner import contract
from dj_runner.engine import ray_env
from dj_runner.engine.ray_env import RayAddressError, parse_address, preflight, resolve_target


@pytest.mark.parametrize(
    ("value", "mode", "host", "port"),
    [
        (None, "embedded", None, None),
        ("local", "embedded", None, None),
        ("auto", "auto", None, None),
        ("10.0.0.5:6379", "gcs", "10.0.0.5", 6379),
        ("head.ns.svc.cluster.local:6379", "gcs", "head.ns.svc.cluster.local", 6379),
        ("ray://head-svc:10001", "client", "head-svc", 10001),
        ("[::1]:6379", "gcs", "::1", 6379),
    ],
)
def test_valid_addresses(value, mode, host, port):
    target = parse_address(value)
    assert (target.mode, target.host, target.port) == (mode, host, port)


@pytest.mark.parametrize(
    "value", ["foo", "host:", ":6379", "host:0", "host:70000", "http://h:1", "ray://h", "a b:1"]
)
def test_malformed_addresses_name_the_value_and_what_is_valid(value):
    with pytest.raises(RayAddressError) as err:
        parse_address(value, "--ray-address")
    assert f"--ray-address {value!r}" in str(err.value)
    assert "'host:port'" in str(err.value) and "'ray://host:port'" in str(err.value)
    assert err.value.exit_code == 2


def test_ray_address_from_the_environment_is_named_as_such(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "nohost")
    with pytest.raises(RayAddressError, match="RAY_ADDRESS 'nohost'"):
        resolve_target(None)
    assert resolve_target("auto").mode == "auto"  # an explicit address wins


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_address_fails_within_the_connect_timeout(monkeypatch):
    monkeypatch.setenv(contract.ENV_RAY_CONNECT_TIMEOUT, "1.5")
    for address in (f"127.0.0.1:{_closed_port()}", f"ray://127.0.0.1:{_closed_port()}"):
        t0 = time.monotonic()
        with pytest.raises(RayAddressError, match=r"no Ray cluster answered there within 1\.5 s"):
            preflight(address)
        # retried until the timeout (a head may still be starting), and not much longer
        assert 1.2 <= time.monotonic() - t0 < 10


def test_a_bad_connect_timeout_is_refused(monkeypatch):
    monkeypatch.setenv(contract.ENV_RAY_CONNECT_TIMEOUT, "soon")
    with pytest.raises(RayAddressError, match=f"{contract.ENV_RAY_CONNECT_TIMEOUT}='soon'"):
        preflight("127.0.0.1:6379")


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_a_bad_min_nodes_is_refused_before_any_work(monkeypatch, value):
    monkeypatch.setenv(contract.ENV_RAY_MIN_NODES, value)
    with pytest.raises(RayAddressError, match=f"{contract.ENV_RAY_MIN_NODES}='{value}'"):
        preflight("ray://127.0.0.1:10001")


def test_the_wait_for_nodes_counts_alive_ones_and_is_bounded(monkeypatch):
    import ray

    from dj_runner.errors import RayUnavailable

    nodes = [{"Alive": True}, {"Alive": False}]
    monkeypatch.setattr(ray, "nodes", lambda: list(nodes))
    monkeypatch.setenv(contract.ENV_RAY_MIN_NODES, "2")
    t0 = time.monotonic()
    with pytest.raises(RayUnavailable, match="1 of the 2 Ray nodes"):
        ray_env._wait_for_nodes("the cluster", time.monotonic() + 1.0)
    assert 0.9 <= time.monotonic() - t0 < 5
    nodes.append({"Alive": True})
    ray_env._wait_for_nodes("the cluster", time.monotonic() + 1.0)  # 2 alive: returns
    monkeypatch.delenv(contract.ENV_RAY_MIN_NODES)
    nodes.clear()
    ray_env._wait_for_nodes("the cluster", time.monotonic())  # no minimum: no wait


def test_auto_with_a_stale_address_file_starts_an_embedded_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    target, note = ray_env._resolve_auto()
    assert target.mode == "embedded" and "no Ray cluster address" in note
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}\n")
    t0 = time.monotonic()
    target, note = ray_env._resolve_auto()
    assert target.mode == "embedded" and "stale file" in note
    assert str(tmp_path / "ray" / "ray_current_cluster") in note
    assert time.monotonic() - t0 < 10


def test_auto_joins_the_cluster_its_address_file_names_when_it_answers(tmp_path, monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
        (tmp_path / "ray").mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
        target, note = ray_env._resolve_auto()
    assert (target.mode, target.port, note) == ("gcs", port, "")
    assert target.source == str(tmp_path / "ray" / "ray_current_cluster")


def test_sweep_removes_only_sessions_whose_owner_is_gone(tmp_path, monkeypatch):
    root = tempfile.mkdtemp(prefix="djt-", dir="/tmp")
    monkeypatch.setattr(tempfile, "tempdir", root)
    try:
        live = os.path.join(root, "djr-1-live")
        dead = os.path.join(root, "djr-2-dead")
        other = os.path.join(root, "djr-not-a-session")
        for d in (live, dead, other):
            os.mkdir(d)
        for d in (live, dead):
            open(os.path.join(d, "owner.lock"), "w").close()
        fd = os.open(os.path.join(live, "owner.lock"), os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # its owner still runs
        try:
            assert ray_env.sweep_stale_sessions() == [dead]
        finally:
            os.close(fd)
        assert os.path.isdir(live) and os.path.isdir(other) and not os.path.exists(dead)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
