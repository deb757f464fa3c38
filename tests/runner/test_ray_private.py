"""The embedded Ray against a real machine: private (a foreign head, a stale address file),
loopback only, deaf to the user's current directory, cleaned up after normal exits and kills;
and bad addresses answered with exit 2 in bounded time."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dj_runner import contract
from dj_runner.engine import ray_env
from dj_runner.observe.event_log import read_events
from dj_runner.store.workdir import WorkDir
from tests.harness.proctree import listening
from tests.harness.waiting import wait_for

from conftest import DEMO, write_recipe

DJ_RUNNER = str(Path(sys.executable).with_name("dj-runner"))
SHADOW = (
    "import os\n"
    "open(os.path.join(os.path.dirname(__file__), 'RAN-%s-' + str(os.getpid())), 'w').close()\n"
    "raise ImportError('the %s.py of the current directory ran')\n"
)


@pytest.fixture
def short_tmp():
    """A private temp root, short enough for Ray's Unix sockets: Ray's default paths and this
    runner's sessions go there, never to /tmp/ray."""
    root = tempfile.mkdtemp(prefix="djt-", dir="/tmp")
    yield Path(root)
    shutil.rmtree(root, ignore_errors=True)


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_TMPDIR=str(root), TMPDIR=str(root), **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recipe(tmp: Path, seconds: float = 0.0, partition_size: int = 40) -> Path:
    ops = [{"slow_mapper": {"seconds": seconds}}] if seconds else []
    return write_recipe(
        tmp / "recipe.yaml",
        project_name="private",
        dataset_path=str(DEMO),
        export_path=str(tmp / "out.jsonl"),
        partition_size=partition_size,
        np=2,
        engine="ray",  # these tests are about Ray; a small input would run without it
        process=[*ops, {"whitespace_normalization_mapper": {}}],
    )


def _connected(work: Path):
    found = read_events(WorkDir(work).events_dir, event_type="ray_connected")
    return found[0] if found else None


def _is_loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0]
    return host.startswith("127.") or host in ("::1",) or host.startswith("::ffff:127.")


def test_embedded_ray_is_private_loopback_only_and_deaf_to_the_cwd(tmp_path, short_tmp):
    # a stale address file where Ray looks for one: an embedded run must neither join nor hang
    (short_tmp / "ray").mkdir()
    (short_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")
    # modules in the user's current directory that shadow the standard library
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in ("gzip", "difflib"):
        (cwd / f"{name}.py").write_text(SHADOW % (name, name))
    work = tmp_path / "work"
    # a home of its own, to see that Ray's token file (~/.ray/auth_token) is not written there
    home = tmp_path / "home"
    home.mkdir()
    recipe = _recipe(tmp_path, seconds=1.0, partition_size=20)
    env = _env(short_tmp, HOME=str(home))
    env.pop("RAY_AUTH_MODE", None)
    proc = subprocess.Popen(
        [DJ_RUNNER, "run", str(recipe), "--work-dir", str(work)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ev = wait_for(lambda: _connected(work), timeout=180, what="the ray_connected event")
        temp_dir = ev.get("ray_temp_dir")
        assert ev.get("ray_mode") == "embedded" and "embedded Ray" in ev.message
        assert temp_dir.startswith(str(short_tmp)) and Path(temp_dir).parent == short_tmp
        wait_for(
            lambda: read_events(WorkDir(work).events_dir, event_type="partition_start"),
            timeout=120,
            what="a partition to start",
        )

        def sockets_of_a_running_job() -> dict[int, list[str]]:
            socks = listening([proc.pid, *ray_env.session_processes(temp_dir)])
            workers = [p for p in socks if _cmdline(p).startswith("ray::partition_task_entry")]
            return socks if workers and sum(map(len, socks.values())) >= 5 else {}

        socks = wait_for(sockets_of_a_running_job, timeout=60, what="the job's Ray processes")
        exposed = {p: [a for a in addrs if not _is_loopback(a)] for p, addrs in socks.items()}
        assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(p.name for p in cwd.iterdir()) == ["difflib.py", "gzip.py"]  # none ran
    # nothing of the embedded Ray is left, and nothing was written where Ray's default is
    assert ray_env.session_processes(temp_dir) == []
    assert not os.path.exists(temp_dir)
    assert os.listdir(short_tmp / "ray") == ["ray_current_cluster"]
    # Ray's token authentication was on, with the session's own token, not a file in the home
    assert ev.get("ray_mode") == "embedded"
    assert list(home.iterdir()) == [], sorted(str(p) for p in home.rglob("*"))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_killed_runner_leaves_no_writer_and_the_next_start_sweeps_the_rest(
    tmp_path, short_tmp, monkeypatch
):
    work = tmp_path / "work"
    recipe = _recipe(tmp_path, seconds=2.0, partition_size=20)
    proc = subprocess.Popen(
        [DJ_RUNNER, "run", str(recipe), "--work-dir", str(work)],
        env=_env(short_tmp),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ev = wait_for(lambda: _connected(work), timeout=180, what="the ray_connected event")
        temp_dir = ev.get("ray_temp_dir")

        def running_tasks() -> list[int]:
            pids = ray_env.session_processes(temp_dir)
            return [p for p in pids if _cmdline(p).startswith("ray::partition_task_entry")]

        tasks = wait_for(running_tasks, timeout=120, what="partition tasks running")
        session = ray_env.session_processes(temp_dir)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = time.time()
    # the tasks die with their raylet, which dies with the driver: no writer is left
    wait_for(
        lambda: not any(ray_env._alive(p) for p in tasks),
        timeout=2,
        interval=0.02,
        what="the tasks of the killed runner to die",
    )
    newest = max(p.stat().st_mtime for p in work.rglob("*") if p.is_file())
    assert newest < killed_at + 1.0
    # what outlives it (Ray's agents) goes at the next embedded start, with its temp dir
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    assert temp_dir in ray_env.sweep_stale_sessions()
    assert not any(ray_env._alive(p) for p in session)
    assert not os.path.exists(temp_dir)


def _start_foreign_head(root: Path) -> tuple[str, Path]:
    home = root / "head"
    home.mkdir()
    port, client_port = _free_port(), _free_port()
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=1",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
    ]
    # loopback only, as the embedded Ray; no token (Ray's token lives in ~/.ray, machine-wide)
    # and gRPC's fork handlers off, as on the operator's Ray heads (docs/runner.md, "Which Ray")
    env = _env(
        root,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        GRPC_ENABLE_FORK_SUPPORT="false",
    )
    subprocess.run(cmd, cwd=home, env=env, check=True, capture_output=True, timeout=180)
    (home / "client-port").write_text(str(client_port))
    return f"127.0.0.1:{port}", home


def _stop_foreign_head(root: Path, home: Path) -> None:
    """Kill the head's processes: those running in its directory or naming its temp dir."""

    def head_processes() -> list[int]:
        out = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                cwd = ""
            if cwd.startswith(str(home)) or str(root / "ray") in _cmdline(int(entry)):
                out.append(int(entry))
        return out

    for pid in head_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not head_processes(), timeout=30, what="the foreign Ray head to stop")


def test_a_foreign_ray_head_is_not_joined_unless_auto_says_so(tmp_path, short_tmp):
    address, home = _start_foreign_head(short_tmp)
    try:
        assert (short_tmp / "ray" / "ray_current_cluster").read_text().strip() == address
        work = tmp_path / "embedded-work"
        proc = subprocess.run(
            [DJ_RUNNER, "run", str(_recipe(tmp_path)), "--work-dir", str(work)],
            env=_env(short_tmp),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        ev = _connected(work)
        assert ev.get("ray_mode") == "embedded"
        assert not ev.get("ray_temp_dir").startswith(str(short_tmp / "ray"))

        work = tmp_path / "auto-work"
        proc = subprocess.run(
            [
                DJ_RUNNER,
                "run",
                str(_recipe(tmp_path)),
                "--work-dir",
                str(work),
                "--ray-address",
                "auto",
            ],
            env=_env(short_tmp),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        ev = _connected(work)
        assert (ev.get("ray_mode"), ev.get("ray_address")) == ("joined", address)
        assert str(short_tmp / "ray" / "ray_current_cluster") in ev.message

        client = f"ray://127.0.0.1:{(home / 'client-port').read_text()}"
        work = tmp_path / "client-work"
        proc = subprocess.run(
            [
                DJ_RUNNER,
                "run",
                str(_recipe(tmp_path)),
                "--work-dir",
                str(work),
                "--ray-address",
                client,
            ],
            # A Ray Client join takes 3 s on a quiet machine and over a minute on a loaded one
            # (docs/benchmarks.md, kuberay): the bound is the runner's own setting, raised here.
            env=_env(short_tmp, DJ_RUNNER_RAY_CONNECT_TIMEOUT_S="240"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        ev = _connected(work)
        assert (ev.get("ray_mode"), ev.get("ray_address")) == ("client", client)
    finally:
        _stop_foreign_head(short_tmp, home)


def test_bad_ray_addresses_exit_2_in_bounded_time_without_traceback(tmp_path, short_tmp):
    recipe = _recipe(tmp_path)
    env = _env(short_tmp, **{contract.ENV_RAY_CONNECT_TIMEOUT: "2"})
    cases = [
        (["--ray-address", f"127.0.0.1:{_free_port()}"], {}, "no Ray cluster answered"),
        (["--ray-address", f"ray://127.0.0.1:{_free_port()}"], {}, "no Ray cluster answered"),
        (["--ray-address", "foo"], {}, "is not a Ray address"),
        ([], {"RAY_ADDRESS": "nohost.invalid:6379"}, "RAY_ADDRESS 'nohost.invalid:6379'"),
    ]
    for args, extra, message in cases:
        t0 = time.monotonic()
        proc = subprocess.run(
            [DJ_RUNNER, "run", str(recipe), "--work-dir", str(tmp_path / "w"), *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert time.monotonic() - t0 < 60
        assert not (tmp_path / "w").exists()  # refused before any work


def test_an_address_that_answers_but_is_no_ray_exits_2_in_bounded_time(tmp_path, short_tmp):
    with socket.socket() as server:  # something listens there, but it is not a Ray GCS
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                DJ_RUNNER,
                "run",
                str(_recipe(tmp_path)),
                "--work-dir",
                str(tmp_path / "w"),
                "--ray-address",
                address,
            ],
            env=_env(short_tmp, **{contract.ENV_RAY_CONNECT_TIMEOUT: "3"}),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2, proc.stderr
    assert f"Ray address '{address}': Ray did not connect within 3 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 60


def test_starting_the_embedded_ray_keeps_the_runners_sigterm_handler(short_tmp):
    script = (
        "import signal\n"
        "def mine(*_): pass\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "from dj_runner.engine import ray_env\n"
        "ray_env.connect(None, 1)\n"
        "kept = signal.getsignal(signal.SIGTERM) is mine\n"
        "ray_env.stop_embedded()\n"
        "print('kept' if kept else 'replaced')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(short_tmp),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "kept"


SLOW_FIRST_START = """
import sys, time
import ray, ray._private.node as node
from dj_runner.engine import ray_env

class Clock:
    # Ray's wait for its raylet (node.py) reads time.monotonic: in the first start each read
    # is 31 s later and the raylet is not found, so Ray gives up at once, as when the raylet
    # is too slow on a loaded machine.
    def __init__(self):
        self.first = True
        self.t = time.monotonic()
    def monotonic(self):
        if self.first:
            self.t += 31
            return self.t
        return time.monotonic()
    def __getattr__(self, name):
        return getattr(time, name)

clock = Clock()
node.time = clock
real_get_node = ray._private.services.get_node

def get_node(*args, **kwargs):
    if clock.first:  # the raylet has not registered yet
        raise RuntimeError("node info not available (test)")
    return real_get_node(*args, **kwargs)

ray._private.services.get_node = get_node
real_start = ray_env._start_embedded
tried = []

def start(*args, **kwargs):
    try:
        return real_start(*args, **kwargs)
    finally:
        tried.append(ray_env._session.temp_dir if ray_env._session else None)
        clock.first = False

ray_env._start_embedded = start
conn = ray_env.connect(None, 1)
assert len(tried) == 2 and tried[0] != tried[1], tried
assert ray_env.session_processes(tried[0]) == [], "the first start's processes are left"
assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42
print("started on try", len(tried), conn.mode)
ray_env.stop_embedded(graceful=True)
"""


def test_an_embedded_ray_that_times_out_starting_is_taken_down_and_started_again(short_tmp):
    """Ray gives its raylet a fixed 30 s to register, which a loaded machine can miss ("The
    current node timed out during startup"; it failed a run here as exit 70, a runner bug).
    That start is taken down whole and tried once more, and the job goes on."""
    proc = subprocess.run(
        [sys.executable, "-c", SLOW_FIRST_START],
        env=_env(short_tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "started on try 2 embedded" in proc.stdout, proc.stdout
    assert "timed out during startup" in proc.stderr and "starting it again" in proc.stderr
