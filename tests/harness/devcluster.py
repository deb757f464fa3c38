"""`make dev-cluster`: the test cluster as a background service for a person with kubectl.

    python -m tests.harness.devcluster up      start in the background, write its kubeconfig
    python -m tests.harness.devcluster status  say whether it runs
    python -m tests.harness.devcluster down    stop it; nothing is left running

`up` starts `serve` as a daemon (its own session, pid in .dev-cluster/devcluster.pid, output in
.dev-cluster/devcluster.log). `serve` runs the control plane, the process node, the KubeRay CRDs,
the KubeRay operator and an S3 server (tests/harness/s3server.py; its address and test
credentials in .dev-cluster/s3.env, to `source` before running `dj-runner` on s3:// paths) until
SIGTERM, and keeps the process ids (with their start times) of
everything it started in .dev-cluster/pids, so that `down` can make sure none is left even if
`serve` was killed.

Liveness is an flock: `serve` holds .dev-cluster/devcluster.lock for as long as it runs, and the
pid file is trusted only while the lock is held, so a stale pid file (the daemon died, the
machine rebooted, the pid was reused) never makes `down` signal an unrelated process. A leftover
pid is killed only if its start time is still the one recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.harness import proctree
from tests.harness.binaries import REPO_ROOT
from tests.harness.processes import tail
from tests.harness.s3server import start_s3_server

DEFAULT_DIR = REPO_ROOT / ".dev-cluster"
START_TIMEOUT = 300.0


LOCK_FILE = "devcluster.lock"
S3_ENV = "s3.env"
S3_BUCKET = "dev"


def _lock(directory: Path) -> int | None:
    """Take the serve lock without waiting; the open descriptor, or None if it is held."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _server_pid(directory: Path) -> int | None:
    """The pid of the running `serve`, or None if none holds the lock."""
    fd = _lock(directory)
    if fd is not None:
        os.close(fd)  # nobody held it: whatever the pid file says is stale
        return None
    return _read_pid(directory / "devcluster.pid")


def _server_running(directory: Path) -> bool:
    fd = _lock(directory)
    if fd is None:
        return True
    os.close(fd)
    return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _usage(directory: Path) -> str:
    kubeconfig = directory / "kubeconfig"
    return (
        "dev cluster is running (control plane + process node + KubeRay CRDs and operator)\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  export PATH={_bin_dir()}:$PATH   # kubectl and helm of the pinned version\n"
        "  kubectl get nodes\n"
        f"  source {directory / S3_ENV}   # an S3 server for s3:// paths (bucket: {S3_BUCKET})\n"
        f"logs and state in {directory} (component logs in state/control-plane/logs/, pods in "
        "state/node/); stop it with `make dev-cluster-down`"
    )


def _bin_dir() -> Path:
    from tests.harness.binaries import bin_dir

    return bin_dir()


def up(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    if _server_running(directory):
        pid = _read_pid(directory / "devcluster.pid")
        if (directory / "ready").exists():
            print(_usage(directory))
            return 0
        print(f"a dev cluster (pid {pid}) is starting or stuck; run `make dev-cluster-down` first")
        return 1
    _cleanup(directory)
    log = directory / "devcluster.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.devcluster", "serve", "--dir", str(directory)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"starting the dev cluster (pid {proc.pid}, log {log}) ...")
    deadline = time.monotonic() + START_TIMEOUT
    while not (directory / "ready").exists():
        if proc.poll() is not None:
            print(f"the dev cluster failed to start (exit {proc.returncode}):\n{tail(log, 60)}")
            _cleanup(directory)
            return 1
        if time.monotonic() > deadline:
            print(f"the dev cluster did not become ready in {START_TIMEOUT:.0f}s:\n{tail(log, 60)}")
            down(directory)
            return 1
        time.sleep(0.2)
    print(_usage(directory))
    return 0


def serve(directory: Path) -> int:
    """Run the cluster in the foreground until SIGTERM or SIGINT."""
    from tests.harness.cluster import Cluster

    lock = _lock(directory)
    if lock is None:
        print("another dev cluster is running in this directory", flush=True)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    (directory / "devcluster.pid").write_text(f"{os.getpid()}\n")
    state = directory / "state"
    shutil.rmtree(state, ignore_errors=True)
    cluster = Cluster(state)
    cluster.start()
    s3 = None
    try:
        s3 = start_s3_server(state / "s3")
        s3.create_bucket(S3_BUCKET)
        env = "".join(f"export {k}={v}\n" for k, v in s3.env().items())
        (directory / S3_ENV).write_text(env)
        (directory / S3_ENV).chmod(0o600)
        shutil.copyfile(cluster.kubeconfig, directory / "kubeconfig")
        (directory / "kubeconfig").chmod(0o600)
        s3_pid = s3.component.pid

        def pids() -> list[int]:
            return [*cluster.pids(), *([s3_pid] if s3_pid is not None else [])]

        _write_pids(directory, pids())
        (directory / "ready").write_text(f"{cluster.server}\n")
        print(f"dev cluster ready at {cluster.server}", flush=True)
        while not stop.wait(2.0):
            _write_pids(directory, pids())
    finally:
        print("stopping the dev cluster", flush=True)
        if s3 is not None:
            s3.stop()
        cluster.stop()
        with contextlib.suppress(FileNotFoundError):
            (directory / "ready").unlink()
    return 0


def _write_pids(directory: Path, pids: list[int]) -> None:
    """One line per process: `<pid> <start time>` (the pair identifies it across pid reuse)."""
    lines = [f"{p} {t}\n" for p in pids if (t := proctree.start_time(p)) is not None]
    tmp = directory / "pids.tmp"
    tmp.write_text("".join(lines))
    tmp.replace(directory / "pids")


def recorded_pids(directory: Path) -> list[tuple[int, int]]:
    """The (pid, start time) pairs that `serve` recorded last."""
    try:
        text = (directory / "pids").read_text()
    except FileNotFoundError:
        return []
    pairs = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            pid, started = (int(w) for w in line.split())
            pairs.append((pid, started))
    return pairs


def _cleanup(directory: Path) -> None:
    for name in ("ready", "kubeconfig", "pids", "devcluster.pid", S3_ENV):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def down(directory: Path) -> int:
    pid = _server_pid(directory)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _server_running(directory) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _server_running(directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    # Whatever serve started and did not stop: each is the leader of its own session, and is
    # killed only if it is still the process that was recorded (same pid, same start time).
    leftovers = []
    for child, started in recorded_pids(directory):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if proctree.alive(child) and proctree.start_time(child) == started:
                if os.getsid(child) == child:
                    os.killpg(child, signal.SIGKILL)
                else:
                    os.kill(child, signal.SIGKILL)
                leftovers.append(child)
    _cleanup(directory)
    shutil.rmtree(directory / "state", ignore_errors=True)
    note = f" (killed leftovers {leftovers})" if leftovers else ""
    print(f"dev cluster stopped{note}" if pid else "no dev cluster was running")
    return 0


def status(directory: Path) -> int:
    if _server_running(directory) and (directory / "ready").exists():
        print(_usage(directory))
        return 0
    print("no dev cluster is running")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.devcluster")
    parser.add_argument("command", choices=("up", "down", "status", "serve"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    commands = {"up": up, "down": down, "status": status, "serve": serve}
    return commands[args.command](directory)


if __name__ == "__main__":
    sys.exit(main())
