"""The harness's own guarantees: containers own their process trees, pods get a private HOME and
TMPDIR and reach Services by their cluster DNS names, ports are retried, and `devcluster down`
never signals a process it did not start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness import binaries, proctree
from tests.harness.cluster import Cluster
from tests.harness.containerprocess import ContainerLaunch, ContainerProcess, StartError
from tests.harness.controlplane import ControlPlane
from tests.harness.podenv import PathMapper, rewrite_service_hosts
from tests.harness.podrunner import POD_MARKER
from tests.harness.ports import RAY_WORKER_PORTS, free_port, free_ray_ports
from tests.harness.procnode import shared_host_paths
from tests.harness.waiting import wait_for
from tests.k8s.podutil import python_pod, wait_gone, wait_phase

pytestmark = pytest.mark.k8s

# A container whose main process starts a daemon that leaves its session (double fork + setsid,
# what `ray start` without --block and any daemon do), writes the daemon's pid, then waits.
DAEMONISING = textwrap.dedent(
    """
    import os, signal, sys, time
    pid_file = sys.argv[1]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(pid_file + ".tmp", "w") as out:
                out.write(str(os.getpid()))
            os.rename(pid_file + ".tmp", pid_file)
            while True:
                time.sleep(1)
        os._exit(0)
    print("main running", flush=True)
    if len(sys.argv) > 2:
        sys.exit(int(sys.argv[2]))
    while True:
        time.sleep(1)
    """
)


def _launch(tmp_path: Path, *argv: str) -> ContainerLaunch:
    return ContainerLaunch(argv, dict(os.environ), tmp_path, tmp_path / "container.log")


def _read_pid(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text(), 30, f"pid file {path}"))


# -- service names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--address=rc-head-svc.ns1.svc.cluster.local:6379", "--address=127.0.0.1:6379"),
        ("ray://rc-head-svc.ns1.svc:10001", "ray://127.0.0.1:10001"),
        ("http://web.default.svc/x", "http://127.0.0.1/x"),
        ("a.b.svc.example.com", "a.b.svc.example.com"),
        ("a.b.svc.cluster.localhost", "a.b.svc.cluster.localhost"),
        ("/etc/a.b.svc", "/etc/a.b.svc"),
        ("x.a.b.svc", "x.a.b.svc"),
        ("Web.b.svc", "Web.b.svc"),
    ],
)
def test_service_dns_names_are_rewritten_to_the_node(text: str, expected: str) -> None:
    assert rewrite_service_hosts(text) == expected


# -- ports ---------------------------------------------------------------------------------


def test_free_ports_are_distinct_and_outside_rays_worker_range() -> None:
    ports = [free_port() for _ in range(50)] + [p for _ in range(10) for p in _ray_ports()]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if p in RAY_WORKER_PORTS or p < 20000]


def _ray_ports() -> tuple[int, int]:
    ports = free_ray_ports()
    return ports.gcs, ports.client


def test_control_plane_retries_a_component_whose_port_was_taken(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path / "cp", binaries.ensure_built())
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        plane.etcd_port = plane.apiserver_port = taken
        try:
            plane.start()
            assert plane.etcd_port != taken and plane.apiserver_port != taken
            assert plane.rest.raw_get("/readyz")[0] == 200
        finally:
            plane.stop()
    logs = (tmp_path / "cp" / "logs").glob("*.log")
    assert any("address already in use" in log.read_text() for log in logs)


# -- container process trees (no cluster needed) -------------------------------------------


def test_a_daemon_stays_under_the_shim_and_dies_with_its_container(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    container = ContainerProcess(
        _launch(tmp_path, sys.executable, "-c", DAEMONISING, str(pid_file))
    )
    daemon = _read_pid(pid_file)
    assert os.getsid(daemon) != os.getsid(container.pid)  # it left the container's session
    assert proctree._stat_fields(daemon)[1] == str(container.shim.pid)  # re-parented to the shim
    assert daemon in container.processes()
    container.terminate()  # SIGTERM to the main process only
    assert container.wait() == 128 + signal.SIGTERM
    assert not proctree.alive(daemon)


def test_a_container_ends_with_its_main_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    argv = (sys.executable, "-c", DAEMONISING, str(pid_file), "3")
    container = ContainerProcess(_launch(tmp_path, *argv))
    assert container.wait() == 3
    assert not proctree.alive(_read_pid(pid_file))


def test_a_container_dies_with_the_thread_that_started_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    started: list[tuple[ContainerProcess, int]] = []

    def start_and_leave() -> None:
        argv = (sys.executable, "-c", DAEMONISING, str(pid_file))
        started.append((ContainerProcess(_launch(tmp_path, *argv)), _read_pid(pid_file)))

    thread = threading.Thread(target=start_and_leave)
    thread.start()
    thread.join()
    container, daemon = started[0]
    # The starting thread is gone: the kernel's parent-death signal makes the shim kill it all.
    assert container.wait() == 128 + signal.SIGKILL
    wait_for(lambda: not proctree.alive(daemon), 10, f"daemon {daemon} gone")
    assert not proctree.alive(container.pid)


def test_a_command_that_cannot_run_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(StartError, match="No such file"):
        ContainerProcess(_launch(tmp_path, "/no/such/binary"))


# -- pods ----------------------------------------------------------------------------------

_SCRATCH = {
    "volumes": [{"name": "scratch", "emptyDir": {}}],
    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
}
# A child that notes any SIGTERM it gets in a file, and otherwise runs until killed.
_NOTING_CHILD = (
    "import signal, time\n"
    "def noted(*_):\n"
    "    open('/scratch/child-got-sigterm', 'w').close()\n"
    "signal.signal(signal.SIGTERM, noted)\n"
    "while True:\n"
    "    time.sleep(1)\n"
)


def test_pod_daemon_is_killed_when_the_pod_is_deleted(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    node = k8s_cluster.node
    core.create_namespaced_pod(
        namespace, python_pod("daemon", DAEMONISING, args=["/scratch/daemon.pid"], **_SCRATCH)
    )
    wait_phase(core, namespace, "daemon", ("Running",))
    pid_file = node.pod_dir(namespace, "daemon") / "volumes" / "scratch" / "daemon.pid"
    daemon = _read_pid(pid_file)
    uid = proctree.environ(daemon)[POD_MARKER]
    assert daemon in node.pod_processes(namespace, "daemon")
    core.delete_namespaced_pod("daemon", namespace, grace_period_seconds=30)
    wait_gone(core, namespace, "daemon", timeout=20)
    assert not proctree.alive(daemon)
    assert proctree.with_env(POD_MARKER, uid) == []


def test_a_daemon_orphaned_by_a_killed_shim_is_killed_by_its_pod_marker(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    # If a container's shim itself is SIGKILLed, its daemon is orphaned out of reach of any
    # process tree; the pod's environment marker still finds it when the pod ends.
    node = k8s_cluster.node
    core.create_namespaced_pod(
        namespace, python_pod("orphan", DAEMONISING, args=["/scratch/daemon.pid"], **_SCRATCH)
    )
    wait_phase(core, namespace, "orphan", ("Running",))
    pid_file = node.pod_dir(namespace, "orphan") / "volumes" / "scratch" / "daemon.pid"
    daemon = _read_pid(pid_file)
    shim = node.runner(namespace, "orphan").session_leaders()[0]
    assert "containershim.py" in proctree.cmdline(shim)
    os.kill(shim, signal.SIGKILL)
    done = wait_phase(core, namespace, "orphan", ("Failed",))
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    wait_for(lambda: not proctree.alive(daemon), 20, f"orphaned daemon {daemon} killed")
    swept = [
        line
        for line in node.log_file.read_text().splitlines()
        if f"pod {namespace}/orphan: killing leftover processes" in line
    ]
    assert swept and str(daemon) in swept[-1]


def test_delete_signals_only_the_main_process_then_kills_the_rest(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    # The child notes a SIGTERM in a file; the main process exits on SIGTERM. A container
    # runtime signals the main process only, so the child must never see SIGTERM, and the pod
    # must go away as soon as the main process exits (not after the grace period).
    code = textwrap.dedent(
        f"""
        import os, signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {_NOTING_CHILD!r}])
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("child", child.pid, flush=True)
        while True:
            time.sleep(1)
        """
    )
    node = k8s_cluster.node
    core.create_namespaced_pod(namespace, python_pod("mainonly", code, **_SCRATCH))
    wait_for(
        lambda: "child" in node.logs(namespace, "mainonly"), 60, "child started", ignore=(KeyError,)
    )
    scratch = node.pod_dir(namespace, "mainonly") / "volumes" / "scratch"
    child = int(node.logs(namespace, "mainonly").split()[1])
    core.delete_namespaced_pod("mainonly", namespace, grace_period_seconds=60)
    wait_gone(core, namespace, "mainonly", timeout=20)  # well before the 60 s grace period
    assert not proctree.alive(child)
    assert not (scratch / "child-got-sigterm").exists()


def test_pods_get_a_private_home_and_a_short_tmpdir_and_reach_services_by_name(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    code = textwrap.dedent(
        """
        import json, os, sys
        print("REPORT " + json.dumps({
            "home": os.environ["HOME"], "tmpdir": os.environ["TMPDIR"],
            "address": os.environ["ADDRESS"], "arg": sys.argv[1],
            "home_is_dir": os.path.isdir(os.environ["HOME"]),
            "tmp_is_dir": os.path.isdir(os.environ["TMPDIR"]),
        }))
        """
    )
    address = f"web.{namespace}.svc.cluster.local:8080"
    for name in ("one", "two"):
        core.create_namespaced_pod(
            namespace,
            python_pod(
                name,
                code,
                args=[f"ray://web.{namespace}.svc:10001"],
                env=[{"name": "ADDRESS", "value": address}],
            ),
        )
    reports = {}
    for name in ("one", "two"):
        done = wait_phase(core, namespace, name, ("Succeeded", "Failed"))
        log = k8s_cluster.node.logs(namespace, name)
        assert done["status"]["phase"] == "Succeeded", log
        reports[name] = json.loads(log.split("REPORT ", 1)[1])
    one, two = reports["one"], reports["two"]
    assert one["home"] != two["home"] and one["tmpdir"] != two["tmpdir"]
    for report in (one, two):
        assert report["home_is_dir"] and report["tmp_is_dir"]
        assert report["home"] != os.path.expanduser("~")
        # Ray's sockets live at $TMPDIR/ray/session_<date>_<pid>/sockets/<name>, within 107 bytes.
        assert len(report["tmpdir"]) <= 60
        assert report["address"] == "127.0.0.1:8080"
        assert report["arg"] == "ray://127.0.0.1:10001"


# -- devcluster down and stale state -------------------------------------------------------


def test_devcluster_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    from tests.harness import devcluster

    directory = tmp_path / "dev"
    directory.mkdir()
    bystander = subprocess.Popen(
        ["sleep", "300"], start_new_session=True
    )  # a session leader, like the cluster's components
    try:
        started = proctree.start_time(bystander.pid)
        assert started is not None
        # A stale pid file (the daemon died; its pid now belongs to someone else), and a
        # recorded component whose pid was reused (same pid, another start time).
        (directory / "devcluster.pid").write_text(f"{bystander.pid}\n")
        (directory / "pids").write_text(f"{bystander.pid} {started + 1}\n")
        assert devcluster.down(directory) == 0
        assert bystander.poll() is None
        assert devcluster.status(directory) == 1
    finally:
        bystander.kill()
        bystander.wait()


# -- path mapping --------------------------------------------------------------------------


def test_mount_paths_are_mapped_but_host_directories_under_them_are_not(tmp_path: Path) -> None:
    """A runner pod mounts an emptyDir at /tmp; a checkout (or pytest's temp dir) under /tmp is
    still the host's own directory: a clone anywhere passes the Kubernetes tests."""
    checkout = Path("/tmp/clone-abc/datajuicer-operator")
    mapper = PathMapper({"/tmp": tmp_path / "tmp", "/data": tmp_path / "data"}, [checkout])
    support = f"{checkout}/tests/runner/support"
    assert (
        mapper.rewrite(f"PYTHONPATH={support}:/tmp/x") == f"PYTHONPATH={support}:{tmp_path}/tmp/x"
    )
    assert mapper.rewrite(str(checkout)) == str(checkout)
    assert mapper.rewrite("/tmp/clone-abcd/y") == f"{tmp_path}/tmp/clone-abcd/y"  # not the same
    assert mapper.rewrite("/tmp") == str(tmp_path / "tmp")
    assert mapper.rewrite("/data/in.jsonl") == f"{tmp_path}/data/in.jsonl"
    assert mapper.local(f"{checkout}/x") == checkout / "x"
    assert mapper.local("/tmp/y") == tmp_path / "tmp" / "y"


def test_the_node_shares_the_checkout_and_pytests_temp_dirs(tmp_path: Path) -> None:
    shared = shared_host_paths(tmp_path)
    assert Path(__file__).resolve().parents[2] in shared
    assert tmp_path in shared
    assert any(p.name.startswith("pytest-of-") for p in shared)
