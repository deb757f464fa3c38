"""The work dir's lock: exclusive between processes, names its holder, never stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dj_runner.store.lock import WorkDirLock, WorkDirLocked, is_locked, read_holder
from dj_runner.store.workdir import WorkDir

HOLDER = textwrap.dedent(
    """
    import sys, time
    from dj_runner.store.lock import WorkDirLock
    lock = WorkDirLock(sys.argv[1], WorkDirLock.holder_for("run-other", "2026-11-30T05:00:00.000Z"))
    lock.acquire()
    print("held", flush=True)
    sys.stdin.readline()  # hold until told (or killed)
    """
)


def hold_in_child(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def lock_for(root: Path, run_id: str = "run-me") -> WorkDirLock:
    return WorkDirLock(root, WorkDirLock.holder_for(run_id, "2026-11-30T05:01:00.000Z"))


def test_a_second_runner_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    proc = hold_in_child(tmp_path)
    try:
        assert is_locked(tmp_path)
        start = time.monotonic()
        with pytest.raises(WorkDirLocked) as err:
            lock_for(tmp_path).acquire(wait_s=0)
        assert time.monotonic() - start < 1.0
        msg = str(err.value)
        assert "run-other" in msg and f"pid {proc.pid}" in msg and "2026-11-30T05:00:00" in msg
        assert os.uname().nodename in msg and "--wait-for-lock" in msg
        assert read_holder(tmp_path).run_id == "run-other"
    finally:
        proc.kill()
        proc.wait()


def test_wait_for_lock_gets_it_when_the_holder_leaves(tmp_path: Path) -> None:
    proc = hold_in_child(tmp_path)
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()  # the holder exits now; the waiter must get the lock
    lock = lock_for(tmp_path)
    lock.acquire(wait_s=30)
    try:
        assert read_holder(tmp_path).run_id == "run-me"
    finally:
        lock.release()
        proc.wait()


def test_wait_for_lock_gives_up_after_its_time(tmp_path: Path) -> None:
    proc = hold_in_child(tmp_path)
    try:
        start = time.monotonic()
        with pytest.raises(WorkDirLocked, match="after waiting"):
            lock_for(tmp_path).acquire(wait_s=0.5, poll_s=0.1)
        assert 0.5 <= time.monotonic() - start < 5
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_sigkilled_runner_does_not_block(tmp_path: Path) -> None:
    proc = hold_in_child(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert WorkDir(tmp_path).lock_path.exists() and not is_locked(tmp_path)
    lock = lock_for(tmp_path)
    lock.acquire(wait_s=0)
    assert is_locked(tmp_path)
    lock.release()
    assert not is_locked(tmp_path)


def test_is_locked_on_a_dir_without_lock(tmp_path: Path) -> None:
    assert not is_locked(tmp_path) and read_holder(tmp_path) is None


def test_a_stop_while_waiting_for_the_lock_ends_the_wait(tmp_path: Path) -> None:
    from dj_runner.errors import Interrupted

    proc = hold_in_child(tmp_path)
    try:
        start = time.monotonic()
        with pytest.raises(Interrupted, match="waiting for the lock"):
            lock_for(tmp_path).acquire(wait_s=60, poll_s=0.05, cancelled=lambda: True)
        assert time.monotonic() - start < 5
    finally:
        proc.kill()
        proc.wait()
