"""The JSONL event log: writing with rotation, reading with filters, and following live.

Every process of a job (the driver and each Ray worker) appends to the same file,
``<work_dir>/events/events.jsonl``. Each event is one line written with a single ``write``
on an ``O_APPEND`` descriptor, so lines from different processes never interleave. When
the file passes ``max_log_size_mb`` it is renamed to ``events.jsonl.<sequence>`` under an
exclusive ``flock`` and the oldest files beyond ``backup_count`` are deleted. Rotated files
are never renamed again, so a follower can read them in order; a writer notices a
rotation by the inode change and reopens.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_NAME = "events.jsonl"

#: Data-Juicer's event types, plus this runner's retry and integrity events.
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "job_start",
        "job_complete",
        "job_failed",
        "job_restart",
        "partition_start",
        "partition_complete",
        "partition_failed",
        "partition_resume",
        "partition_retry",
        "op_start",
        "op_complete",
        "op_failed",
        "checkpoint_save",
        "checkpoint_load",
        "checkpoint_invalid",
        "processing_start",
        "processing_complete",
        "processing_error",
        "partition_plan_saved",
        "partition_plan_loaded",
        "global_op_start",
        "global_op_complete",
        "records_rejected",
        "export_complete",
    }
)


LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
#: Each event type's level; ``event_logging.log_level`` drops the events below it.
EVENT_LEVELS: dict[str, str] = {
    **dict.fromkeys(EVENT_TYPES, "INFO"),
    **dict.fromkeys(("partition_retry", "checkpoint_invalid", "records_rejected"), "WARNING"),
    **dict.fromkeys(("op_failed", "partition_failed", "job_failed"), "ERROR"),
}


@dataclass(frozen=True)
class Event:
    """One event as read back from the log."""

    event_type: str
    timestamp: float
    message: str
    event_id: str
    job_id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def partition_id(self) -> int | None:
        return self.fields.get("partition_id")

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "message": self.message,
            "event_id": self.event_id,
            "job_id": self.job_id,
            **self.fields,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        raw = dict(raw)
        return cls(
            event_type=raw.pop("event_type"),
            timestamp=raw.pop("timestamp"),
            message=raw.pop("message", ""),
            event_id=raw.pop("event_id", ""),
            job_id=raw.pop("job_id", ""),
            fields=raw,
        )


class EventLogger:
    """Appends events to ``<log_dir>/events.jsonl`` with size-based rotation.

    Safe to use from several processes at once, and from several threads of one process.
    """

    def __init__(
        self,
        log_dir: Path,
        job_id: str,
        max_log_size_mb: float = 100,
        backup_count: int = 5,
        enabled: bool = True,
        log_level: str = "DEBUG",
    ):
        self.log_dir = Path(log_dir)
        self.log_level = log_level
        self._min_level = LEVELS[log_level]
        self.path = self.log_dir / LOG_NAME
        self.job_id = job_id
        self.max_bytes = int(max_log_size_mb * 1024 * 1024)
        self.backup_count = backup_count
        self.enabled = enabled
        self._pid = os.getpid()
        self._prefix = uuid.uuid4().hex[:12]
        self._seq = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino = -1
        self._size = 0
        if enabled:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._open()

    def _open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        st = os.fstat(self._fd)
        self._ino, self._size = st.st_ino, st.st_size

    def _rotated_elsewhere(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

    def log(self, event_type: str, message: str = "", **fields: Any) -> str:
        """Append one event; returns its event_id. Fields with value None are left out."""
        level = EVENT_LEVELS.get(event_type, "INFO")
        if not self.enabled or LEVELS[level] < self._min_level:
            return ""
        with self._lock:
            self._seq += 1
            event_id = f"{self._prefix}-{self._seq}"
            record = {
                "event_type": event_type,
                "level": level,
                "timestamp": time.time(),
                "message": message,
                "event_id": event_id,
                "job_id": self.job_id,
                "process_id": self._pid,
                "thread_id": threading.get_ident(),
            }
            for key, value in fields.items():
                if value is not None:
                    record[key] = value
            line = (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode()
            if self._size + len(line) > self.max_bytes or self._rotated_elsewhere():
                self._rotate_if_needed(len(line))
            assert self._fd is not None
            os.write(self._fd, line)
            self._size += len(line)
            return event_id

    def _rotate_if_needed(self, incoming: int) -> None:
        lock_path = self.log_dir / ".rotate.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    st = None
                if (
                    st is not None
                    and st.st_ino == self._ino
                    and st.st_size + incoming > self.max_bytes
                    and st.st_size > 0
                ):
                    backups = _backups(self.log_dir)
                    if self.backup_count > 0:
                        seq = backups[-1][0] + 1 if backups else 1
                        os.replace(self.path, self.path.with_name(f"{LOG_NAME}.{seq:06d}"))
                        backups = _backups(self.log_dir)
                    else:
                        os.unlink(self.path)
                    for _, old in backups[: max(0, len(backups) - self.backup_count)]:
                        old.unlink(missing_ok=True)
                self._open()  # the current file: new, or rotated by another process
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> EventLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "log_dir": self.log_dir,
            "job_id": self.job_id,
            "max_log_size_mb": self.max_bytes / (1024 * 1024),
            "backup_count": self.backup_count,
            "enabled": self.enabled,
            "log_level": self.log_level,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


def _backups(log_dir: Path) -> list[tuple[int, Path]]:
    """Rotated files ``events.jsonl.NNNNNN`` with their sequence numbers, oldest first."""
    out = []
    for p in Path(log_dir).glob(f"{LOG_NAME}.*"):
        suffix = p.name[len(LOG_NAME) + 1 :]
        if suffix.isdigit():
            out.append((int(suffix), p))
    return sorted(out)


def log_files(log_dir: Path) -> list[Path]:
    """The log's files, oldest first: the rotated ones by sequence, then ``events.jsonl``."""
    files = [p for _, p in _backups(log_dir)]
    current = Path(log_dir) / LOG_NAME
    if current.exists():
        files.append(current)
    return files


def _parse_lines(lines: Iterable[bytes]) -> Iterator[Event]:
    for line in lines:
        if not line.endswith(b"\n"):
            continue  # a line still being written
        try:
            yield Event.from_dict(json.loads(line))
        except (ValueError, KeyError):
            continue


def read_events(
    log_dir: Path,
    event_type: str | Iterable[str] | None = None,
    partition_id: int | None = None,
    operation_name: str | None = None,
    since: float | None = None,
    job_id: str | None = None,
) -> list[Event]:
    """Every event in the log (rotated files included), oldest first, filtered."""
    types = {event_type} if isinstance(event_type, str) else set(event_type or ())
    out: list[Event] = []
    for path in log_files(log_dir):
        with open(path, "rb") as fh:
            for ev in _parse_lines(fh):
                if _matches(ev, types, partition_id, operation_name, since, job_id):
                    out.append(ev)
    out.sort(key=lambda e: e.timestamp)
    return out


def _matches(
    ev: Event,
    types: set[str],
    partition_id: int | None,
    operation_name: str | None,
    since: float | None,
    job_id: str | None,
) -> bool:
    if types and ev.event_type not in types:
        return False
    if partition_id is not None and ev.partition_id != partition_id:
        return False
    if operation_name is not None and ev.get("operation_name") != operation_name:
        return False
    if since is not None and ev.timestamp < since:
        return False
    return job_id is None or ev.job_id == job_id


def follow_events(
    log_dir: Path,
    from_start: bool = True,
    poll_interval: float = 0.2,
    stop: threading.Event | None = None,
    until: Iterable[str] = (),
) -> Iterator[Event]:
    """Yield events as they are appended, following rotations; works from any process.

    Stops when ``stop`` is set, or after yielding an event whose type is in ``until``.
    Files are tracked by inode, so events in files rotated away between two polls are
    still read, in order.
    """
    log_dir = Path(log_dir)
    path = log_dir / LOG_NAME
    stop_types = set(until)
    done: set[int] = set()  # inodes read to their end
    fh = None
    ino = -1
    buf = b""

    def read_backups() -> Iterator[Event]:
        """Rotated files not read yet and older than the open file, oldest first.

        Their names never change. The open file may itself have been rotated away since it
        was opened: it is read through its handle, so the scan stops there, and the files
        rotated after it are read once its end has been drained.
        """
        for _, old in _backups(log_dir):
            try:
                with open(old, "rb") as old_fh:
                    old_ino = os.fstat(old_fh.fileno()).st_ino
                    if old_ino == ino:
                        break
                    if old_ino in done:
                        continue
                    done.add(old_ino)
                    events = list(_parse_lines(old_fh)) if from_start else []
            except FileNotFoundError:
                continue
            yield from events

    while stop is None or not stop.is_set():
        if fh is None:
            try:
                fh = open(path, "rb")
                ino = os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                fh, ino = None, -1
            # Whatever was rotated away before the current file appeared comes first.
            for ev in read_backups():
                yield ev
                if ev.event_type in stop_types:
                    return
            if fh is None or ino in done:
                if fh is not None:
                    fh.close()
                    fh = None
                time.sleep(poll_interval)
                continue
            if not from_start:
                fh.seek(0, os.SEEK_END)
            from_start = True  # files that appear later are read whole
        chunk = fh.read()
        if chunk:
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for ev in _parse_lines(line + b"\n" for line in complete):
                yield ev
                if ev.event_type in stop_types:
                    fh.close()
                    return
            continue
        try:
            rotated = os.stat(path).st_ino != ino
        except FileNotFoundError:
            rotated = True
        if rotated:
            # Drain what was appended to the old file before it was renamed away, then
            # read every file rotated away since, oldest first.
            rest = buf + fh.read()
            fh.close()
            done.add(ino)
            fh, buf = None, b""
            for ev in _parse_lines(line + b"\n" for line in rest.split(b"\n")[:-1]):
                yield ev
                if ev.event_type in stop_types:
                    return
            continue
        time.sleep(poll_interval)
    if fh is not None:
        fh.close()
