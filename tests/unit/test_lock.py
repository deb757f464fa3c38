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


def hold_in_child(root: Path, script: str = HOLDER, ready: str = "held") -> subprocess.Popen[str]:
    """A child process running `script` on `root`, once it has printed `ready`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == ready
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


RAW_HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, sys
    fd = os.open(sys.argv[1] + "/.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("locked", flush=True)
    sys.stdin.readline()  # the record is written only when told: the window a refusal can hit
    record = {"host": "h", "pid": os.getpid(), "started_at": "2026-12-07T00:00:00Z", "run_id": "run-late"}
    os.pwrite(fd, json.dumps(record).encode(), 0)
    print("written", flush=True)
    sys.stdin.readline()
    """
)


def test_a_refusal_between_the_holders_flock_and_its_record_waits_to_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runners started together: the second can find the lock taken and the record not yet
    written. It waits for the record (bounded) rather than refusing with "not said who yet"."""
    import threading

    import dj_runner.store.lock as lock_module

    proc = hold_in_child(tmp_path, RAW_HOLDER, "locked")
    looked = threading.Event()
    real_read_holder = lock_module.read_holder

    def read_holder(root):  # type: ignore[no-untyped-def]
        found = real_read_holder(root)
        looked.set()
        return found

    monkeypatch.setattr(lock_module, "read_holder", read_holder)
    errors: list[BaseException] = []

    def refuse() -> None:
        try:
            lock_for(tmp_path).acquire(wait_s=0)
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=refuse)
    try:
        thread.start()
        assert looked.wait(30), "the refused runner never read the lock file"
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "written"
        thread.join(30)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], WorkDirLocked), errors
        assert "run-late" in str(errors[0]) and f"pid {proc.pid}" in str(errors[0])
    finally:
        proc.kill()
        proc.wait()
        thread.join(30)


def test_a_holder_that_never_writes_its_record_is_refused_after_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dj_runner.store.lock as lock_module

    monkeypatch.setattr(lock_module, "HOLDER_RECORD_WAIT_S", 0.3)
    proc = hold_in_child(tmp_path, RAW_HOLDER, "locked")
    try:
        with pytest.raises(WorkDirLocked, match="has not said who yet"):
            lock_for(tmp_path).acquire(wait_s=0)
    finally:
        proc.kill()
        proc.wait()
