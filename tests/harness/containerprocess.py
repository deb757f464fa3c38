"""How a container runs on the process node: what it is started with, and its process tree.

`ContainerLaunch` is everything a container is started with (argv, environment, working
directory, log file), built by the pod runner in one place (`podrunner.build_launch`). A
`ContainerProcess` runs one launch as a local process under a shim (`containershim.py`): the shim
is a subreaper, so every process the container starts, daemons included, stays under it and is
killed when the container ends. The node:

- stops a container gracefully with `terminate()`: SIGTERM to the main process only, as a
  container runtime signals PID 1;
- kills it with `kill()`: the shim SIGKILLs the whole tree;
- crashes it in tests with `signal_group(sig)`: a signal to the main process's process group.

The shim gets a parent-death signal (SIGTERM: "kill the container"), and the main process one
from the shim, so a container never outlives the node's thread that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.harness import proctree

SHIM = Path(__file__).with_name("containershim.py")
STATUS_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1
try:  # resolved once here: the child between fork and exec must not load libraries
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _shim_dies_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class ContainerLaunch:
    """What one container is started with (after path and service-name rewriting)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(hash=False)
    cwd: Path
    log_path: Path


class StartError(Exception):
    """The container's command could not be executed (kubelet reason StartError)."""


class RunningContainer(Protocol):
    """What the pod runner needs from a started container, whatever runs it (a local process
    tree here; another runtime can provide the same)."""

    pid: int  # the main process, as the node sees it

    def wait(self) -> int: ...  # blocks until the container ended; its exit code

    def ended_within(self, timeout: float) -> bool: ...

    def running(self) -> bool: ...

    def session_leaders(self) -> list[int]: ...  # what `devcluster down` may kill if orphaned

    def terminate(self) -> None: ...  # graceful stop: SIGTERM to the main process

    def kill(self) -> None: ...  # every process of the container, now

    def signal_group(self, sig: int) -> None: ...  # tests crash containers this way

    def processes(self) -> list[int]: ...


class ContainerProcess:
    """One running container: its shim and its main process."""

    def __init__(self, launch: ContainerLaunch) -> None:
        self.launch = launch
        status_r, status_w = os.pipe()
        try:
            with launch.log_path.open("ab") as out:
                self.shim = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(SHIM), str(status_w), *launch.argv],
                    cwd=launch.cwd,
                    env=dict(launch.env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(status_w,),
                    preexec_fn=_shim_dies_with_parent,
                )
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        try:
            report = _read_all(status_r, STATUS_TIMEOUT).decode("utf-8", "replace").strip()
        finally:
            os.close(status_r)
        word, _, rest = report.partition(" ")
        if word == "started":
            self.pid = int(rest)
            return
        if word == "error":
            self.shim.wait()
            errno_text, _, message = rest.partition(" ")
            raise StartError(message or f"errno {errno_text}")
        self.shim.kill()
        self.shim.wait()
        raise StartError(f"the container shim exited with {self.shim.returncode}: {report!r}")

    def wait(self) -> int:
        """Wait for the container to end; its exit code (128+N when killed by signal N)."""
        code = self.shim.wait()
        return 128 - code if code < 0 else code

    def ended_within(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the container to end; whether it did."""
        try:
            self.shim.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def running(self) -> bool:
        return self.shim.poll() is None

    def session_leaders(self) -> list[int]:
        """The shim and the main process (each leads a session) while the container runs."""
        return [self.shim.pid, self.pid] if self.running() else []

    def terminate(self) -> None:
        """SIGTERM to the main process only, as a container runtime stops a container."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """Kill every process of the container (the shim SIGKILLs its tree, then exits)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.shim.pid, signal.SIGTERM)

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the main process's process group (tests crash containers this way)."""
        if not self.running():
            raise ProcessLookupError(self.pid)
        os.killpg(self.pid, sig)

    def processes(self) -> list[int]:
        """The container's living processes: the main process and everything below the shim."""
        if not self.running():
            return []
        return proctree.descendants(self.shim.pid)


def _read_all(fd: int, timeout: float) -> bytes:
    """Read `fd` until EOF, for at most `timeout` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return data
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk
