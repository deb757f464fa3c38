"""Local processes as /proc shows them: trees, environment markers, memory, listening sockets.
Linux only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1])."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    return raw.rsplit(b")", 1)[1].decode().split()


def pids() -> list[int]:
    return [int(e.name) for e in PROC.iterdir() if e.name.isdigit()]


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def stopped(pid: int) -> bool:
    """True if `pid` is stopped by a signal (SIGSTOP; state T) or traced (t)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] in ("T", "t")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, a unique identity."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def descendants(root: int) -> list[int]:
    """Every living process below `root`."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(pid)
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def environ(pid: int) -> dict[str, str]:
    """The environment a process was started with ({} if unreadable)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def with_env(key: str, value: str) -> list[int]:
    """Living processes whose environment has `key=value` (inherited by every descendant that
    does not clear it)."""
    me = os.getpid()
    return [p for p in pids() if p != me and alive(p) and environ(p).get(key) == value]


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS), 0 if it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (shared pages divided among their users), 0 if it
    is gone: unlike RSS, the PSS of several processes adds up to the memory they really use."""
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def kill_all(pids_to_kill: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids_to_kill:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def listening(pids_to_check: list[int]) -> dict[int, list[str]]:
    """The TCP addresses (``ip:port``) each process listens on, from /proc/net and its fds."""
    table: dict[str, str] = {}
    for family in ("tcp", "tcp6"):
        with open(PROC / "net" / family) as fh:
            for line in fh.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A":  # LISTEN
                    table[parts[9]] = _address(parts[1])
    out: dict[int, list[str]] = {}
    for pid in pids_to_check:
        fds = PROC / str(pid) / "fd"
        try:
            links = [os.readlink(fds / fd) for fd in os.listdir(fds)]
        except OSError:
            continue
        inodes = [link[8:-1] for link in links if link.startswith("socket:[")]
        out[pid] = [table[i] for i in inodes if i in table]
    return out


def _address(hex_addr: str) -> str:
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    # /proc stores each 32-bit word in host (little-endian) order
    ip = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(ip) == 4 else socket.AF_INET6
    return f"{socket.inet_ntop(family, ip)}:{int(port_hex, 16)}"
