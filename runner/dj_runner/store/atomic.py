"""Crash-safe file writes: write to a temporary name, fsync, rename, fsync the directory.

A write that fails leaves the previous file (or none) and no temporary; one that fails for want
of space raises ``NoSpace`` naming the target path (``nospace.py``). An append that fails part
way leaves a torn last line, which readers skip and the next append closes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dj_runner.store.nospace import raising_no_space


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The names ``tmp_name`` gives, as a glob: what a crash may leave half-written.
TMP_GLOB = ".*.tmp-*"


def tmp_name(path: Path) -> Path:
    """A temporary name beside ``path``, unique across processes, containers and hosts."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write is continued, not dropped)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to produce the file, then make it appear at ``path`` atomically.

    Raises ``NoSpace`` (naming ``path``) when the device is full or the quota used up; the
    temporary file is removed, so a failed write gives its space back.
    """
    path = Path(path)
    tmp = tmp_name(path)
    with raising_no_space(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))

    write_atomic(path, write)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it. A torn last line is ignored by readers.

    A torn line left by a crash (no trailing newline) is closed first, so the new record is
    never glued onto it. Creating the log also fsyncs its directory. Raises ``NoSpace`` (naming
    ``path``) when the device is full: the record then does not count (a torn line at most).
    """
    path = Path(path)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    created = not path.exists()
    with raising_no_space(path):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(path.parent)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of an append-only log; a torn or garbled line is skipped."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n")[:-1]:  # the last piece is empty or torn
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
