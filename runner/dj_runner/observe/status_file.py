"""``<work_dir>/status.json``: the current run's live status, the runner's contract with readers.

The driver alone writes it (``StatusWriter``), atomically (``Blobs.write``: a rename, or one PUT), at
start, after partitions complete or fail and op stages change (at most once a second,
``MIN_WRITE_INTERVAL_S``), and at the end (at once).
A run superseded by a newer one (a newer claim on the work dir: ``store/fencing.py``) writes it
no more: the file is the newer run's.
``read_status`` is the reader for everybody else (``dj-runner status``, the operator): it
reads one small file, whatever the size of the event log, and works with the log disabled.
Its shape is the contract's (``contract.Status``, schema ``contract.STATUS_SCHEMA_VERSION``;
docs/runner.md). Readers accept unknown keys; a missing file means "not started".
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dj_runner import __version__, contract
from dj_runner.errors import RunnerError
from dj_runner.store.fencing import Fence, Superseded
from dj_runner.store.workdir import WorkDir


def now_rfc3339() -> str:
    """The current UTC time, RFC 3339 with milliseconds and ``Z``."""
    return _rfc3339(datetime.now(UTC))


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def estimated_completion(data: dict[str, Any], now: datetime) -> str | None:
    """When the partition tasks will be finished, at the pace of this run: the partitions
    still to do times the time this run has taken per partition it finished (partitions
    restored from checkpoints are not counted as this run's work).

    None when the run is not running, has finished no partition yet, or has none left. A
    recipe with a global op (a deduplicator) finishes its partitions only after the global
    stage, so its estimate appears late in the run.
    """
    if data.get("state") != "running":
        return None
    parts = data.get("partitions") or {}
    total, done, failed = (int(parts.get(k) or 0) for k in ("total", "done", "failed"))
    resumed = int((data.get("resumed") or {}).get("partitions_done") or 0)
    finished_here = done + failed - resumed
    remaining = total - done - failed
    if finished_here <= 0 or remaining <= 0:
        return None
    elapsed = (now - parse_rfc3339(data["started_at"])).total_seconds()
    if elapsed <= 0:
        return None
    return _rfc3339(now + timedelta(seconds=remaining * elapsed / finished_here))


def read_status(work_dir: str | Path) -> dict[str, Any] | None:
    """The work dir's status, or None when there is none yet (or it cannot be read)."""
    try:
        data = WorkDir(work_dir).blobs.read_json(WorkDir.STATUS)
    except (OSError, ValueError, RunnerError):
        return None
    return data if isinstance(data, dict) else None


#: The least seconds between two writes of ``status.json`` while a run goes on: a change within
#: it is written when it has passed (the run's end at once). Readers poll; a write per
#: partition would make the driver's work-dir traffic grow with the partitions' rate
#: (docs/benchmarks.md, the scale section), and in a bucket each write is a request.
MIN_WRITE_INTERVAL_S = 1.0


class StatusWriter:
    """Keeps the current run's status and writes it out on change, at most once a second."""

    def __init__(
        self,
        work_dir: str | Path,
        job_id: str,
        run_id: str,
        export_path: str | None,
        fence: Fence | None = None,
    ):
        self.work = WorkDir(work_dir)
        #: The run's claim, checked before each write: once a newer run has claimed the work
        #: dir, this run writes the file no more (it is the newer run's).
        self.fence = fence
        self._superseded = False
        now = now_rfc3339()
        self.data: dict[str, Any] = {
            "schema_version": contract.STATUS_SCHEMA_VERSION,
            "job_id": job_id,
            "run_id": run_id,
            "state": "running",
            "started_at": now,
            "engine_ready_at": None,
            "updated_at": now,
            "finished_at": None,
            "runner_version": __version__,
            "partitions": {"total": 0, "done": 0, "failed": 0, "running": 0},
            "samples": {"in": 0, "out": 0, "rejected": 0},
            "stage": None,
            "last_checkpoint_at": None,
            "estimated_completion_at": None,
            "resumed": None,
            "checkpoint": None,
            "retries": None,
            "export_path": export_path,
            "error": None,
        }
        self.min_interval_s = MIN_WRITE_INTERVAL_S
        self._lock = threading.RLock()
        self._last_write = -1e9
        self._timer: threading.Timer | None = None

    def update(self, **changes: Any) -> None:
        """Merge ``changes`` (nested dicts are merged one level deep) and write the file: at
        once, or ``MIN_WRITE_INTERVAL_S`` after the last write, whichever is later."""
        with self._lock:
            for key, value in changes.items():
                current = self.data.get(key)
                if isinstance(value, dict) and isinstance(current, dict) and key != "error":
                    current.update(value)
                else:
                    self.data[key] = value
            wait = self._last_write + self.min_interval_s - time.monotonic()
            if wait <= 0:
                self._write_locked()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        """The write an update deferred, on the timer's thread. That thread has no caller to
        tell: if the write fails (a full disk), the next write, which every update and the
        run's end make, tries again and its caller reports the failure."""
        with self._lock:
            if self._timer is not None:
                self._timer = None
                with contextlib.suppress(OSError, RunnerError):
                    self._write_locked()

    def finish(self, state: str, error: dict[str, Any] | None = None) -> None:
        """Record the run's end, written at once."""
        assert state in contract.RUN_STATES, state
        with self._lock:
            self.data.update(state=state, finished_at=now_rfc3339(), error=error)
            self._write_locked()

    def superseded(self) -> bool:
        """Whether a newer run has claimed the work dir (looked up now, until it has)."""
        if self.fence is not None and not self._superseded:
            try:
                self.fence.check_current()
            except Superseded:
                self._superseded = True
            except (OSError, RunnerError):
                pass  # the claim could not be read: write as before (the write will say why)
        return self._superseded

    def write(self) -> None:
        """Write the file now (and drop a write that was due later: this one has it all)."""
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.superseded():
            return
        self._last_write = time.monotonic()
        now = datetime.now(UTC)
        self.data["updated_at"] = _rfc3339(now)
        self.data["estimated_completion_at"] = estimated_completion(self.data, now)
        blob = (json.dumps(self.data, indent=1, sort_keys=False) + "\n").encode()
        self.work.blobs.write(WorkDir.STATUS, blob)
