"""The work dir's writer lock: one live runner per work dir on a host.

A runner holds an exclusive ``flock`` on ``<work_dir>/.lock`` for the driver's whole life and
writes who it is (host, pid, start time, run id) into that file. A second runner is refused
at once (``WorkDirLocked``, exit 5, naming the holder: a refusal that comes between the
holder's ``flock`` and its record waits for the record, up to ``HOLDER_RECORD_WAIT_S``) or
waits up to ``wait_s`` seconds for the holder to go.
The kernel drops the lock when the holder dies, however it dies (SIGKILL included), so a
stale lock file never blocks anybody; the holder record in it is only information.

``flock`` is reliable between processes of one host. On a volume shared by several hosts it
may not be (it depends on the file system); ``fencing.py`` covers that case. A work dir in
object storage has no ``flock``: its lock is a lease object (``lease.py``) with the same
outcomes (exit 5 naming the holder, or a wait).
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
from typing import Any

from dj_runner.errors import Interrupted, RunnerError
from dj_runner.store.lease import Lease, read_lease
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

    def __init__(self, root: str | Path, holder: LockHolder | None, waited_s: float) -> None:
        self.holder = holder
        who = holder.describe() if holder else "another runner (it has not said who yet)"
        waited = f" after waiting {waited_s:.0f}s" if waited_s > 0 else ""
        super().__init__(
            f"work dir {root} is in use by {who}{waited}; wait for it to finish, stop it, "
            "or pass --wait-for-lock SECONDS"
        )


def _holder(data: Any) -> LockHolder | None:
    try:
        return LockHolder(
            str(data["host"]), int(data["pid"]), str(data["started_at"]), str(data["run_id"])
        )
    except (KeyError, ValueError, TypeError):
        return None


def read_holder(root: str | Path) -> LockHolder | None:
    """Who holds (or last held) the lock, from the lock file; None if unknown."""
    work = WorkDir(root)
    if not work.is_local:
        lease = read_lease(work)
        return None if lease is None else _holder(lease.holder)
    try:
        return _holder(json.loads(work.lock_path.read_text()))
    except (OSError, ValueError):
        return None


def is_locked(root: str | Path) -> bool:
    """Whether a live runner holds the work dir's lock (works on a read-only work dir)."""
    work = WorkDir(root)
    if not work.is_local:
        lease = read_lease(work)
        return lease is not None and not lease.expired(time.time())
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


#: How long a refused runner waits for the holder, which has the lock but has not yet written
#: its record (it does so right after taking the lock), so that the refusal can name it.
HOLDER_RECORD_WAIT_S = 10.0
_FREE = LockHolder("", -1, "", "")  # the lock was free again when looked at


def _named_holder(fd: int, root: Path) -> LockHolder | None:
    """The holder's record, once it has written it; ``_FREE`` if the lock is free again (the
    holder exited); None if ``HOLDER_RECORD_WAIT_S`` passes first."""
    deadline = time.monotonic() + HOLDER_RECORD_WAIT_S
    while True:
        holder = read_holder(root)
        if holder is not None:
            return holder
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return _FREE
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


class WorkDirLock:
    """The exclusive lock of one work dir, held from ``acquire`` to ``release``."""

    def __init__(self, root: str | Path, holder: LockHolder) -> None:
        self.work = WorkDir(root)
        self.holder = holder
        self._fd: int | None = None
        self._lease: Lease | None = None

    @property
    def lost(self) -> bool:
        """Whether another runner took the lease over (object storage only)."""
        return self._lease is not None and self._lease.lost

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
        if not self.work.is_local:
            lease = Lease(self.work, asdict(self.holder))
            lease.acquire(
                wait_s,
                lambda holder, waited: WorkDirLocked(self.work.uri, _holder(holder), waited),
                cancelled=cancelled,
            )
            self._lease = lease
            return
        self.root = self.work.root
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
                holder = _named_holder(fd, self.root)
                if holder is _FREE:
                    continue  # the holder went while we looked: try again
                os.close(fd)
                raise WorkDirLocked(self.root, holder, waited)
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
        if self._lease is not None:
            lease, self._lease = self._lease, None
            lease.release()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WorkDirLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
