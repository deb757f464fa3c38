"""The JSONL event log: one segment file per writing process, merged by readers.

Every process of a job (the driver and each Ray worker) writes its own files in
``<work_dir>/events/``: ``events-<host>-<pid>-<id>-<NNNNNN>.jsonl``, one JSON object a line.
Nothing is ever appended to by two processes and nothing is ever renamed, so the log needs
neither ``O_APPEND`` atomicity nor ``flock`` across clients and stays correct on a volume
mounted by several nodes. A writer starts its next segment before a line would take the current
one past ``max_log_size_mb``, and then deletes the oldest *finished* segments (those whose
writer has started a newer one) beyond ``backup_count``, across all writers. A line is written
completely or, when the disk is full, its fragment is terminated by the writer's next write,
so a reader sees a line it cannot parse and skips it; lines are never glued together.

Readers merge the writers' streams by timestamp, each writer's own order kept. A follower
tails every segment; it lets go of a segment only after it has seen the writer's next segment
and has read the old one to its end (through a fresh ``open``, which is what makes the data of
a closed file visible on NFS), so rotation never loses an event.

In object storage (``<work_dir>`` an ``s3://`` prefix), which has no append, each writer
collects its lines and uploads them as a new object of its stream, ``events-<writer>-<NNNNNN>
.jsonl``, at most every ``OBJECT_FLUSH_S`` seconds and whenever its last logger closes; an
object is whole once it exists. Readers list the prefix and read each object once. A writer
killed outright loses the lines of its last ``OBJECT_FLUSH_S`` seconds at most; a follower sees
an event at most ``OBJECT_FLUSH_S`` plus its own poll interval after it was logged. Retention
keeps the newest objects up to ``max_log_size_mb * (backup_count + 1)`` bytes.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from dj_runner.store.blobs import S3Blobs
from dj_runner.store.location import is_s3
from dj_runner.store.nospace import raising_no_space

#: The single file of logs written before per-writer segments, and its rotated copies
#: (``events.jsonl.NNNNNN``); still read, never written.
LOG_NAME = "events.jsonl"
_SEGMENT = re.compile(r"^events-(?P<writer>[A-Za-z0-9_-]+?)-(?P<seq>\d{6,})\.jsonl$")
_LEGACY = "legacy"
#: In object storage: the longest a writer holds lines before it uploads them.
OBJECT_FLUSH_S = 0.5
#: In object storage: a follower's shortest poll interval (each poll is one LIST request).
OBJECT_POLL_S = 1.0


class EventType(StrEnum):
    """Every event type the log writes, in one place: Data-Juicer's, plus this runner's retry,
    integrity, Ray and interruption events. A member is its JSONL string (``StrEnum``), so
    ``ev.event_type == "op_failed"`` and ``ev.event_type == EventType.OP_FAILED`` both hold."""

    JOB_START = "job_start"
    JOB_COMPLETE = "job_complete"
    JOB_FAILED = "job_failed"
    JOB_RESTART = "job_restart"
    JOB_INTERRUPTED = "job_interrupted"
    PARTITION_START = "partition_start"
    PARTITION_COMPLETE = "partition_complete"
    PARTITION_FAILED = "partition_failed"
    PARTITION_RESUME = "partition_resume"
    PARTITION_RETRY = "partition_retry"
    OP_START = "op_start"
    OP_COMPLETE = "op_complete"
    OP_FAILED = "op_failed"
    #: The seed's name for an op's error: the same member as ``OP_FAILED``.
    OPERATION_ERROR = "op_failed"
    CHECKPOINT_SAVE = "checkpoint_save"
    CHECKPOINT_LOAD = "checkpoint_load"
    CHECKPOINT_INVALID = "checkpoint_invalid"
    PROCESSING_START = "processing_start"
    PROCESSING_COMPLETE = "processing_complete"
    PROCESSING_ERROR = "processing_error"
    PARTITION_PLAN_SAVED = "partition_plan_saved"
    PARTITION_PLAN_LOADED = "partition_plan_loaded"
    GLOBAL_OP_START = "global_op_start"
    GLOBAL_OP_COMPLETE = "global_op_complete"
    RECORDS_REJECTED = "records_rejected"
    EXPORT_COMPLETE = "export_complete"
    RAY_CONNECTED = "ray_connected"
    ENGINE_SELECTED = "engine_selected"
    CLEANUP = "cleanup"


#: The runner's own event types that older readers (and the metrics' ``type`` label) do not
#: count among the regular ones.
RUNNER_EVENT_TYPES: frozenset[str] = frozenset({EventType.JOB_INTERRUPTED.value})
#: Every event type the log may hold: what a filter by type may name.
KNOWN_EVENT_TYPES: frozenset[str] = frozenset(t.value for t in EventType)
#: The regular event types (each a ``type`` label value of the event counter).
EVENT_TYPES: frozenset[str] = KNOWN_EVENT_TYPES - RUNNER_EVENT_TYPES


def check_event_types(event_type: str | Iterable[str] | None) -> frozenset[str]:
    """The event types a filter names, each a known one (an enum member's value is taken).

    Raises ``ValueError`` naming the unknown types and the valid ones: a filter by a
    misspelt type would otherwise find nothing, silently.
    """
    if event_type is None:
        return frozenset()
    one = isinstance(event_type, str) or hasattr(event_type, "value")
    raw = [event_type] if one else list(event_type)
    types = frozenset(str(getattr(t, "value", t)) for t in raw)
    unknown = types - KNOWN_EVENT_TYPES
    if unknown:
        raise ValueError(
            f"event_type: unknown event type(s) {sorted(unknown)}; valid: "
            + ", ".join(sorted(KNOWN_EVENT_TYPES))
        )
    return types


LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
#: Each event type's level; ``event_logging.log_level`` drops the events below it.
EVENT_LEVELS: dict[str, str] = {
    **dict.fromkeys(EVENT_TYPES, "INFO"),
    **dict.fromkeys(("partition_retry", "checkpoint_invalid", "records_rejected"), "WARNING"),
    **dict.fromkeys(("op_failed", "partition_failed", "job_failed"), "ERROR"),
}


def _field(name: str) -> Any:
    """A read-only attribute for one of Data-Juicer's event fields: its value, or None."""
    return property(lambda self: self.fields.get(name), doc=f"The event's ``{name}`` (or None).")


@dataclass(frozen=True)
class Event:
    """One event as read back from the log.

    ``event_type`` is an ``EventType`` (a plain string for a type this version does not
    know); Data-Juicer's event fields read as attributes, None when the event has none.
    """

    event_type: EventType | str
    timestamp: float
    message: str
    event_id: str
    job_id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = self.event_type
        if not isinstance(kind, EventType) and kind in KNOWN_EVENT_TYPES:
            object.__setattr__(self, "event_type", EventType(kind))

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    partition_id = _field("partition_id")
    operation_name = _field("operation_name")
    operation_idx = _field("operation_idx")
    status = _field("status")
    duration = _field("duration")
    error_message = _field("error_message")
    error_type = _field("error_type")
    stack_trace = _field("stack_trace")
    retry_count = _field("retry_count")
    checkpoint_path = _field("checkpoint_path")
    input_rows = _field("input_rows")
    output_rows = _field("output_rows")
    output_path = _field("output_path")
    total_partitions = _field("total_partitions")
    process_id = _field("process_id")
    thread_id = _field("thread_id")

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_type": str(self.event_type),
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


# ---------------------------------------------------------------------------------- segments


@dataclass(frozen=True, order=True)
class Segment:
    """One file of the log: written by one writer, the ``seq``-th it started."""

    writer: str
    seq: int
    path: Path = field(compare=False)  # in object storage: the key under the log's prefix
    size: int = field(default=-1, compare=False)  # known from an object listing


def _object_log(log_dir: str | Path) -> S3Blobs | None:
    """The log's objects, when the log is in object storage."""
    text = str(log_dir)
    return S3Blobs(text) if is_s3(text) else None


def list_segments(log_dir: str | Path) -> list[Segment]:
    """The log's files, grouped by writer, each writer's in the order it wrote them."""
    out: list[Segment] = []
    objects = _object_log(log_dir)
    if objects is not None:
        for entry in objects.list(""):
            m = _SEGMENT.match(entry.key)
            if m:
                out.append(Segment(m["writer"], int(m["seq"]), Path(entry.key), entry.size))
        out.sort()
        return out
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return out
    for name in names:
        m = _SEGMENT.match(name)
        if m:
            out.append(Segment(m["writer"], int(m["seq"]), Path(log_dir) / name))
        elif name == LOG_NAME:
            out.append(Segment(_LEGACY, 1 << 62, Path(log_dir) / name))
        elif name.startswith(LOG_NAME + ".") and name[len(LOG_NAME) + 1 :].isdigit():
            out.append(Segment(_LEGACY, int(name[len(LOG_NAME) + 1 :]), Path(log_dir) / name))
    out.sort()
    return out


def log_files(log_dir: str | Path) -> list[Path]:
    """Every file of the log, grouped by writer and in each writer's order."""
    return [s.path for s in list_segments(log_dir)]


def _finished(segments: list[Segment]) -> list[Segment]:
    """Segments their writer will never write again: all but each writer's newest."""
    newest: dict[str, int] = {}
    for s in segments:
        newest[s.writer] = max(newest.get(s.writer, -1), s.seq)
    return [s for s in segments if s.seq < newest[s.writer] or s.writer == _LEGACY]


def _writer_name() -> str:
    # A pod's HOSTNAME is its name (the kubelet sets it): segments say which pod wrote them.
    name = os.environ.get("HOSTNAME") or socket.gethostname()
    host = re.sub(r"[^A-Za-z0-9_]", "_", name)[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


#: ``os.write``; a test replaces it to simulate short writes and a full disk.
_write_fd = os.write


class _Writer:
    """What every writer of this process's stream has: who it is, its users, its counters."""

    def __init__(self, log_dir: Path, max_bytes: int, backup_count: int) -> None:
        self.log_dir = log_dir
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.pid = os.getpid()
        self.name = _writer_name()
        self.id_prefix = self.name.rsplit("-", 1)[1]
        self.lock = threading.Lock()
        self.users = 0
        self.seq = 0
        self.events = 0


class _SegmentWriter(_Writer):
    """This process's segments in one log dir. Shared by its EventLoggers; thread-safe."""

    def __init__(self, log_dir: Path, max_bytes: int, backup_count: int) -> None:
        super().__init__(log_dir, max_bytes, backup_count)
        self.fd: int | None = None
        self.size = 0
        self.torn = False  # the file ends in the fragment of a failed write

    @property
    def path(self) -> Path:
        return self.log_dir / f"events-{self.name}-{max(self.seq, 1):06d}.jsonl"

    def append(self, line: bytes) -> None:
        """Write ``line`` whole, starting a new segment first when it would not fit."""
        if self.seq == 0 or (self.size > 0 and self.size + len(line) > self.max_bytes):
            self._next_segment()
            self.torn = False  # a fragment ending a finished segment is a torn last line
        elif self.fd is None:  # closed by the last logger of this process; reopened here
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.torn:
            self._write_all(b"\n")  # end the fragment: one unparsable line, never a glued one
            self.torn = False
        self._write_all(line)

    def _write_all(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += _write_fd(self.fd, view[written:])
        except OSError:
            if written:
                self.torn = True
            raise
        finally:
            self.size += written

    def _next_segment(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closed before the next exists: readers that see it see all of this
            self.fd = None
        self.seq += 1
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self.size = 0
        if self.seq > 1:
            self._prune()

    def _prune(self) -> None:
        """Delete the oldest finished segments, of any writer, beyond ``backup_count``."""
        candidates = _finished(list_segments(self.log_dir))
        if len(candidates) <= self.backup_count:
            return
        finished = []
        for seg in candidates:
            try:
                finished.append((seg.path.stat().st_mtime_ns, seg.seq, seg.path))
            except FileNotFoundError:
                continue
        finished.sort()
        for _, _, path in finished[: max(0, len(finished) - self.backup_count)]:
            path.unlink(missing_ok=True)

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users <= 0 and self.fd is not None:
                os.close(self.fd)  # reopened (same segment) by this process's next logger
                self.fd = None


class _ObjectSegmentWriter(_Writer):
    """This process's stream of objects in a log in object storage. Thread-safe.

    ``append`` only collects; a thread uploads what was collected as one new object at most
    every ``OBJECT_FLUSH_S`` seconds, and ``release`` by the last user uploads the rest.
    """

    def __init__(self, log_dir: str, max_bytes: int, backup_count: int) -> None:
        super().__init__(Path(log_dir), max_bytes, backup_count)  # the Path: for messages only
        self.objects = S3Blobs(log_dir)
        self._lines: list[bytes] = []
        self._wake = threading.Event()
        self._upload_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._since_prune = 0

    @property
    def path(self) -> Path:
        return self.log_dir / f"events-{self.name}-{max(self.seq, 1):06d}.jsonl"

    def append(self, line: bytes) -> None:  # called with self.lock held
        self._lines.append(line)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="dj-events", daemon=True)
            self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if not self.flush():
                return
            time.sleep(OBJECT_FLUSH_S)

    def flush(self) -> bool:
        """Upload the collected lines as the stream's next object; False when there were none."""
        with self._upload_lock:
            with self.lock:
                lines, self._lines = self._lines, []
                if not lines:
                    return False
                self.seq += 1
                key = f"events-{self.name}-{self.seq:06d}.jsonl"
            self.objects.write(key, b"".join(lines))
            self._since_prune += 1
            if self._since_prune >= 64:
                self._since_prune = 0
                self._prune()
            return True

    def _prune(self) -> None:
        """Delete the oldest objects of any writer beyond the log's byte budget."""
        budget = self.max_bytes * (self.backup_count + 1)
        entries = sorted(self.objects.list(""), key=lambda e: (e.mtime, e.key), reverse=True)
        total = 0
        for entry in entries:
            total += entry.size
            if total > budget:
                self.objects.delete(entry.key)

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            last = self.users <= 0
        if last:
            self.flush()


_writers: dict[tuple[int, str, int, int], _SegmentWriter | _ObjectSegmentWriter] = {}
_writers_lock = threading.Lock()


def _acquire_writer(
    log_dir: str | Path, max_bytes: int, backup_count: int
) -> _SegmentWriter | _ObjectSegmentWriter:
    text = str(log_dir)
    where = text.rstrip("/") if is_s3(text) else os.path.abspath(log_dir)
    key = (os.getpid(), where, max_bytes, backup_count)
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = (
                _ObjectSegmentWriter(where, max_bytes, backup_count)
                if is_s3(where)
                else _SegmentWriter(Path(where), max_bytes, backup_count)
            )
        with writer.lock:
            writer.users += 1
        return writer


def _reset_after_fork() -> None:
    global _writers_lock
    _writers_lock = threading.Lock()
    _writers.clear()  # the parent's writers: a child writes segments of its own


os.register_at_fork(after_in_child=_reset_after_fork)


class EventLogger:
    """Writes events to this process's segments of ``log_dir``.

    Safe from several processes at once (each has its own files) and from several threads.
    Loggers of one process for one log dir share that process's current segment.
    """

    def __init__(
        self,
        log_dir: str | Path,
        job_id: str,
        max_log_size_mb: float = 100,
        backup_count: int = 5,
        enabled: bool = True,
        log_level: str = "DEBUG",
    ):
        self.log_dir: str | Path = log_dir if is_s3(str(log_dir)) else Path(log_dir)
        self.log_level = log_level
        self._min_level = LEVELS[log_level]
        self.job_id = job_id
        self.max_bytes = max(1, int(max_log_size_mb * 1024 * 1024))
        self.backup_count = backup_count
        self.enabled = enabled
        self._writer: _SegmentWriter | _ObjectSegmentWriter | None = None
        if enabled:
            if isinstance(self.log_dir, Path):
                self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = _acquire_writer(self.log_dir, self.max_bytes, backup_count)

    @property
    def path(self) -> Path | None:
        """The segment this process writes now (None when logging is disabled)."""
        return self._writer.path if self._writer is not None else None

    def log(self, event_type: str, message: str = "", **fields: Any) -> str:
        """Append one event; returns its event_id. Fields with value None are left out.

        Raises ``NoSpace`` (naming the segment) when the device is full, ``OSError`` for other
        write errors; the log stays readable either way.
        """
        level = EVENT_LEVELS.get(event_type, "INFO")
        if not self.enabled or LEVELS[level] < self._min_level:
            return ""
        writer = self._writer
        if writer is None:
            raise ValueError("log() on a closed EventLogger")
        if writer.pid != os.getpid():  # used in a forked child: write a segment of its own
            writer = self._writer = _acquire_writer(self.log_dir, self.max_bytes, self.backup_count)
        with writer.lock:
            writer.events += 1
            record = {
                "event_type": event_type,
                "level": level,
                "timestamp": time.time(),
                "message": message,
                "event_id": f"{writer.id_prefix}-{writer.events}",
                "job_id": self.job_id,
                "process_id": writer.pid,
                "thread_id": threading.get_ident(),
            }
            for key, value in fields.items():
                if value is not None:
                    record[key] = value
            line = (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode()
            with raising_no_space(writer.path):
                writer.append(line)
            return record["event_id"]

    def flush(self) -> None:
        """Make every event logged so far readable (object storage uploads what it holds)."""
        writer = self._writer
        if isinstance(writer, _ObjectSegmentWriter):
            writer.flush()

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and writer.pid == os.getpid():
            writer.release()

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


# ---------------------------------------------------------------------------------- reading


def _parse(line: bytes) -> Event | None:
    """An event from one complete line; None for a line that is not one (a torn fragment)."""
    try:
        raw = json.loads(line)
        return Event.from_dict(raw) if isinstance(raw, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def _read_segment(path: Path, objects: S3Blobs | None = None) -> Iterator[Event]:
    """The complete lines of one file; a last line without its newline is skipped."""
    if objects is not None:
        data = objects.read(path.as_posix())
        for line in (data or b"").split(b"\n")[:-1]:
            ev = _parse(line)
            if ev is not None:
                yield ev
        return
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if line.endswith(b"\n"):
                    ev = _parse(line)
                    if ev is not None:
                        yield ev
    except FileNotFoundError:  # deleted by retention while listed
        return


def _by_writer(segments: list[Segment]) -> dict[str, list[Segment]]:
    streams: dict[str, list[Segment]] = {}
    for seg in segments:
        streams.setdefault(seg.writer, []).append(seg)
    return streams


@dataclass(frozen=True)
class EventFilter:
    """Which events to keep; None keeps all."""

    types: frozenset[str] = frozenset()
    partition_id: int | None = None
    operation_name: str | None = None
    since: float | None = None
    job_id: str | None = None

    @classmethod
    def of(
        cls,
        event_type: str | Iterable[str] | None = None,
        partition_id: int | None = None,
        operation_name: str | None = None,
        since: float | None = None,
        job_id: str | None = None,
    ) -> EventFilter:
        return cls(check_event_types(event_type), partition_id, operation_name, since, job_id)

    def __call__(self, ev: Event) -> bool:
        if self.types and ev.event_type not in self.types:
            return False
        if self.partition_id is not None and ev.partition_id != self.partition_id:
            return False
        if self.operation_name is not None and ev.get("operation_name") != self.operation_name:
            return False
        if self.since is not None and ev.timestamp < self.since:
            return False
        return self.job_id is None or ev.job_id == self.job_id


def _timestamp(ev: Event) -> float:
    return ev.timestamp


def read_events(
    log_dir: str | Path,
    event_type: str | Iterable[str] | None = None,
    partition_id: int | None = None,
    operation_name: str | None = None,
    since: float | None = None,
    job_id: str | None = None,
) -> list[Event]:
    """Every event in the log, filtered: the writers' streams merged by timestamp, each in
    its own order."""
    keep = EventFilter.of(event_type, partition_id, operation_name, since, job_id)
    objects = _object_log(log_dir)
    streams = [
        (ev for seg in segs for ev in _read_segment(seg.path, objects) if keep(ev))
        for segs in _by_writer(list_segments(log_dir)).values()
    ]
    return list(heapq.merge(*streams, key=_timestamp))


class _Tail:
    """A follower's position in one segment: bytes consumed and a partial last line."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self.buf = b""
        self.fh = None

    def read(self, reopen: bool) -> list[Event]:
        """New complete lines. ``reopen`` reads through a fresh open (the writer closed it)."""
        if reopen and self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.fh is None:
            try:
                self.fh = open(self.path, "rb")
            except FileNotFoundError:
                return []
            self.fh.seek(self.offset + len(self.buf))
        chunk = self.fh.read()
        if not chunk:
            return []
        data = self.buf + chunk
        end = data.rfind(b"\n") + 1
        self.buf = data[end:]
        self.offset += end
        return [ev for line in data[:end].splitlines() if (ev := _parse(line)) is not None]

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def follow_events(
    log_dir: str | Path,
    from_start: bool = True,
    poll_interval: float = 0.2,
    stop: threading.Event | None = None,
    until: Iterable[str] = (),
    timeout: float | None = None,
    event_type: str | Iterable[str] | None = None,
    partition_id: int | None = None,
    operation_name: str | None = None,
    ended: Callable[[], bool] | None = None,
) -> Iterator[Event]:
    """Yield events as they are written, by any process, across rotations.

    ``from_start=False`` skips what is in the log already. Stops when ``stop`` is set, when
    ``timeout`` seconds have passed, after an event whose type is in ``until`` (yielded
    when it passes the filters: ``event_type``, ``partition_id``, ``operation_name``), or
    when ``ended()`` was true before a poll that found nothing new (so every event written
    before the end is yielded first). Each poll yields the new events of all writers merged
    by timestamp, each writer's in order.
    """
    local = not is_s3(str(log_dir))
    poller: _FilePoller | _ObjectPoller = (
        _FilePoller(Path(log_dir), from_start) if local else _ObjectPoller(str(log_dir), from_start)
    )
    # In object storage each poll is a listing (a request): at most one per OBJECT_POLL_S.
    interval = poll_interval if local else max(poll_interval, OBJECT_POLL_S)
    keep = EventFilter.of(event_type, partition_id, operation_name)
    stop_types = set(until)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not (stop is not None and stop.is_set()):
            was_ended = ended is not None and ended()
            new = False
            for ev in heapq.merge(*poller.poll(), key=_timestamp):
                new = True
                if keep(ev):
                    yield ev
                if ev.event_type in stop_types:
                    return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if not new and was_ended:
                return
            if not new:
                wait = interval
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                if stop is not None:
                    stop.wait(wait)
                else:
                    time.sleep(wait)
    finally:
        poller.close()


class _FilePoller:
    """A follower's view of a log on a filesystem: a tail of each segment it has not finished."""

    def __init__(self, log_dir: Path, from_start: bool) -> None:
        self.log_dir = log_dir
        self.from_start = from_start
        self.tails: dict[Path, _Tail] = {}
        self.done: set[Path] = set()
        self.first = True

    def poll(self) -> list[list[Event]]:
        """The new complete lines of every writer since the last poll, a batch per writer."""
        segments = list_segments(self.log_dir)
        finished = set(_finished(segments))
        listed = {seg.path for seg in segments}
        batches: list[list[Event]] = []
        for writer_segs in _by_writer(segments).values():
            batch: list[Event] = []
            for seg in writer_segs:
                if seg.path in self.done:
                    continue
                tail = self.tails.get(seg.path)
                if tail is None:
                    size = _size(seg.path) if self.first and not self.from_start else 0
                    tail = self.tails[seg.path] = _Tail(seg.path, size)
                is_finished = seg in finished
                batch += tail.read(reopen=is_finished)
                if is_finished:  # its writer has moved on: this was its last line
                    tail.close()
                    self.done.add(self.tails.pop(seg.path).path)
            batches.append(batch)
        for path in [p for p in self.tails if p not in listed]:  # deleted by retention
            batches.append(self.tails[path].read(reopen=False))
            self.tails.pop(path).close()
            self.done.add(path)
        self.first = False
        return batches

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()


class _ObjectPoller:
    """A follower's view of a log in object storage: its objects never change once they
    exist, so each is read once, when a listing first shows it."""

    def __init__(self, log_dir: str, from_start: bool) -> None:
        self.log_dir = log_dir
        self.objects = S3Blobs(log_dir)
        self.from_start = from_start
        self.seen: set[str] = set()
        self.first = True

    def poll(self) -> list[list[Event]]:
        batches: list[list[Event]] = []
        for segs in _by_writer(list_segments(self.log_dir)).values():
            batch: list[Event] = []
            for seg in segs:
                key = seg.path.as_posix()
                if key in self.seen:
                    continue
                self.seen.add(key)
                if self.first and not self.from_start:
                    continue
                batch += list(_read_segment(seg.path, self.objects))
            batches.append(batch)
        self.first = False
        return batches

    def close(self) -> None:
        return


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
