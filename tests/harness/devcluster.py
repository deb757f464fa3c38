"""`make dev-cluster`: the test cluster as a background service for a person with kubectl.

    python -m tests.harness.devcluster up      start in the background, write its kubeconfig
    python -m tests.harness.devcluster status  say whether it runs
    python -m tests.harness.devcluster down    stop it; nothing is left running

`up` starts `serve` as a daemon (its own session, pid in .dev-cluster/devcluster.pid, output in
.dev-cluster/devcluster.log). `serve` runs the control plane, the process node and the CRDs until
SIGTERM, and keeps the process ids of everything it started in .dev-cluster/pids, so that `down`
can make sure none is left even if `serve` was killed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.harness.binaries import REPO_ROOT
from tests.harness.processes import tail

DEFAULT_DIR = REPO_ROOT / ".dev-cluster"
START_TIMEOUT = 300.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _usage(directory: Path) -> str:
    kubeconfig = directory / "kubeconfig"
    return (
        "dev cluster is running (control plane + process node + KubeRay CRDs)\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  export PATH={_bin_dir()}:$PATH   # kubectl and helm of the pinned version\n"
        "  kubectl get nodes\n"
        f"logs and state in {directory}; stop it with `make dev-cluster-down`"
    )


def _bin_dir() -> Path:
    from tests.harness.binaries import bin_dir

    return bin_dir()


def up(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    pid = _read_pid(directory / "devcluster.pid")
    if pid and _alive(pid) and (directory / "ready").exists():
        print(_usage(directory))
        return 0
    if pid and _alive(pid):
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
    (directory / "devcluster.pid").write_text(f"{proc.pid}\n")
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

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    (directory / "devcluster.pid").write_text(f"{os.getpid()}\n")
    state = directory / "state"
    shutil.rmtree(state, ignore_errors=True)
    cluster = Cluster(state)
    cluster.start()
    try:
        shutil.copyfile(cluster.kubeconfig, directory / "kubeconfig")
        (directory / "kubeconfig").chmod(0o600)
        _write_pids(directory, cluster.pids())
        (directory / "ready").write_text(f"{cluster.server}\n")
        print(f"dev cluster ready at {cluster.server}", flush=True)
        while not stop.wait(2.0):
            _write_pids(directory, cluster.pids())
    finally:
        print("stopping the dev cluster", flush=True)
        cluster.stop()
        with contextlib.suppress(FileNotFoundError):
            (directory / "ready").unlink()
    return 0


def _write_pids(directory: Path, pids: list[int]) -> None:
    tmp = directory / "pids.tmp"
    tmp.write_text("".join(f"{p}\n" for p in pids))
    tmp.replace(directory / "pids")


def _cleanup(directory: Path) -> None:
    for name in ("ready", "kubeconfig", "pids", "devcluster.pid"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def down(directory: Path) -> int:
    pid = _read_pid(directory / "devcluster.pid")
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    # Whatever serve started and did not stop: each is the leader of its own session.
    leftovers = []
    for line in (directory / "pids").read_text().split() if (directory / "pids").exists() else []:
        child = int(line)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if _alive(child) and os.getsid(child) == child:
                os.killpg(child, signal.SIGKILL)
                leftovers.append(child)
    _cleanup(directory)
    shutil.rmtree(directory / "state", ignore_errors=True)
    note = f" (killed leftovers {leftovers})" if leftovers else ""
    print(f"dev cluster stopped{note}" if pid else "no dev cluster was running")
    return 0


def status(directory: Path) -> int:
    pid = _read_pid(directory / "devcluster.pid")
    if pid and _alive(pid) and (directory / "ready").exists():
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
