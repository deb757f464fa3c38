"""The work dir's writer lock: one live runner per work dir on a host.

A runner holds an exclusive ``flock`` on ``<work_dir>/.lock`` for the driver's whole life and
writes who it is (host, pid, start time, run id) into that file. A second runner is refused
at once (``WorkDirLocked``, exit 5) or waits up to ``wait_s`` seconds for the holder to go.
The kernel drops the lock when the holder dies, however it dies (SIGKILL included), so a
stale lock file never blocks anybody; the holder record in it is only information.

``flock`` is reliable between processes of one host. On a volume shared by several hosts it
may not be (it depends on the file system); ``fencing.py`` covers that case.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from dj_runner.errors import Interrupted, RunnerError
from dj_runner.store.nospace import raising_no_space
from dj_runner.store.workdir import WorkDir


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    started_at: str
    run_id: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on host {self.host}, started {self.started_at})"


class WorkDirLocked(RunnerError):
    """Another live runner holds the work dir."""

    def __init__(self, root: Path, holder: LockHolder | None, waited_s: float) -> None:
        self.holder = holder
        who = holder.describe() if holder else "another runner (it has not said who yet)"
        waited = f" after waiting {waited_s:.0f}s" if waited_s > 0 else ""
        super().__init__(
            f"work dir {root} is in use by {who}{waited}; wait for it to finish, stop it, "
            "or pass --wait-for-lock SECONDS"
        )


def read_holder(root: str | Path) -> LockHolder | None:
    """Who holds (or last held) the lock, from the lock file; None if unknown."""
    try:
        data = json.loads(WorkDir(root).lock_path.read_text())
        return LockHolder(
            str(data["host"]), int(data["pid"]), str(data["started_at"]), str(data["run_id"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_locked(root: str | Path) -> bool:
    """Whether a live runner holds the work dir's lock (works on a read-only work dir)."""
    try:
        fd = os.open(WorkDir(root).lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return False


class WorkDirLock:
    """The exclusive lock of one work dir, held from ``acquire`` to ``release``."""

    def __init__(self, root: str | Path, holder: LockHolder) -> None:
        self.root = Path(root)
        self.holder = holder
        self._fd: int | None = None

    @staticmethod
    def holder_for(run_id: str, started_at: str) -> LockHolder:
        return LockHolder(socket.gethostname(), os.getpid(), started_at, run_id)

    def acquire(
        self,
        wait_s: float = 0.0,
        poll_s: float = 0.2,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Take the lock, or raise WorkDirLocked once ``wait_s`` seconds have passed
        (Interrupted if ``cancelled()`` turns true while waiting)."""
        self.root.mkdir(parents=True, exist_ok=True)
        # os.open's descriptors are not inherited by child processes (PEP 446): a Ray
        # process started by this driver cannot keep the lock alive after the driver dies.
        fd = os.open(WorkDir(self.root).lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            waited = time.monotonic() - start
            if cancelled():
                os.close(fd)
                raise Interrupted(f"stopped while waiting for the lock of {self.root}")
            if waited >= wait_s:
                os.close(fd)
                raise WorkDirLocked(self.root, read_holder(self.root), waited)
            time.sleep(min(poll_s, max(0.0, wait_s - waited)))
        self._fd = fd
        data = (json.dumps(asdict(self.holder), sort_keys=True) + "\n").encode()
        try:
            with raising_no_space(WorkDir(self.root).lock_path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
        except BaseException:
            self.release()  # a lock whose holder line cannot be written is not taken
            raise

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WorkDirLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
