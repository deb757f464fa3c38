"""The shim of one container on the process node: it owns the container's whole process tree.

    python containershim.py STATUS_FD COMMAND [ARG...]

What a container runtime's shim does, for a local process:

- The shim is a child subreaper (PR_SET_CHILD_SUBREAPER). Every process the container starts
  stays in the shim's subtree, even one that daemonises (double fork, `setsid`): its orphans are
  re-parented to the shim, not to init. So the shim can always find and kill all of them.
- It starts the container's main process in a session of its own (the container's process
  group), with a parent-death signal, and reports on STATUS_FD either `started <pid>` or
  `error <errno> <message>` if the command cannot be executed; then it closes STATUS_FD.
- It reaps every process re-parented to it, so no zombie is left.
- When the main process exits, the container is over: the shim SIGKILLs everything left in its
  subtree, reaps it, and exits with the main process's code (128+N if it was killed by signal N).
- SIGTERM to the shim means "kill the container now" (the node sends it when the grace period is
  over, and the kernel sends it when the node's thread that started the shim ends).
  A graceful stop is the node's SIGTERM to the main process, not to the shim.

The shim imports only the standard library and runs with `python -I -S`: it starts in a few
milliseconds and does not depend on the project's environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
START_ERROR_EXIT = 128


class KillContainer(Exception):
    """Raised by the SIGTERM handler to leave a blocking wait."""


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _descendants(root: int) -> list[int]:
    """Every living process below `root`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _exec_child(argv: list[str], error_w: int, shim: int) -> None:  # pragma: no cover - child
    try:
        os.setsid()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != shim:  # the shim died before the death signal was armed
            os._exit(START_ERROR_EXIT)
        os.execvpe(argv[0], argv, os.environ)
    except OSError as exc:
        os.write(error_w, f"{exc.errno or 0} {exc.strerror or exc}".encode())
    finally:
        os._exit(127)


def _kill_tree_and_reap(main: int, main_status: int | None) -> int | None:
    """SIGKILL everything below the shim and reap it all; return the main process's status."""
    me = os.getpid()
    while True:
        for pid in _descendants(me):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return main_status
        if pid == main:
            main_status = status


def _on_term(signum: int, frame: object) -> None:
    raise KillContainer


def _start(argv: list[str], status_fd: int) -> int | None:
    """Fork and exec the main process; report on `status_fd`; its pid, or None if exec failed."""
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    shim = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(error_r)
        _exec_child(argv, error_w, shim)
    os.close(error_w)
    failure = b""
    while chunk := os.read(error_r, 512):
        failure += chunk
    os.close(error_r)
    if failure:
        os.write(status_fd, b"error " + failure + b"\n")
        return None
    os.write(status_fd, f"started {pid}\n".encode())
    return pid


def main(args: list[str]) -> int:
    status_fd = int(args[0])
    argv = args[1:]
    os.set_inheritable(status_fd, False)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, _on_term)
    pid: int | None = None
    main_status: int | None = None
    try:
        pid = _start(argv, status_fd)
        os.close(status_fd)
        while pid is not None and main_status is None:
            try:
                reaped, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if reaped == pid:
                main_status = status
    except KillContainer:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # from here on the shim only cleans up
    main_status = _kill_tree_and_reap(pid or -1, main_status)
    if pid is None:
        return START_ERROR_EXIT
    if main_status is None:
        return 128 + signal.SIGKILL
    code = os.waitstatus_to_exitcode(main_status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
