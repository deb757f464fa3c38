"""Where each thing of a job's work directory lives: its paths, and nothing else.

<work_dir>/job.json              job id, recipe fingerprint, what decides the output (manifest.py)
<work_dir>/plan.json             the partition plan, written once (plan/saved_plan.py)
<work_dir>/checkpoints/pNNNNN/   a partition's checkpoints and commits.jsonl (checkpoint.py)
<work_dir>/global/opNNN/         a global op's committed decision (engine/global_decisions.py)
<work_dir>/rejects/pNNNNN.jsonl  malformed input records, with source file and line
<work_dir>/events/               the event log (observe/event_log.py)
<work_dir>/result.json           the last run's outcome
<work_dir>/status.json           the current run's live status (observe/status_file.py)
<work_dir>/claim.json            the newest run's claim (fencing.py)
<work_dir>/.lock                 the live runner's lock and who it is (lock.py)
<work_dir>/.stop-<run id>        asks the run's partition tasks to stop after their checkpoint

The names are the contract's (``dj_runner.contract``); this module joins them to a root. Every
reader and writer of the work dir gets its paths here, and the modules that own each file read
and write it. Every path is built by ``_path`` from relative POSIX parts, so the work dir is one
place to teach another filesystem; today it is the local one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from dj_runner import contract

#: The entries earlier runs' results live in; ``--restart`` removes them. The lock and the
#: claim are not among them: they order a run after the earlier ones.
_RESULT_FILES = (contract.JOB_FILE, contract.PLAN_FILE, contract.RESULT_FILE, contract.STATUS_FILE)
#: The entries that belong to one plan: checkpoints, global decisions, rejects.
_PLAN_DIRS = (contract.CHECKPOINTS_DIR, contract.GLOBAL_DIR, contract.REJECTS_DIR)


class WorkDir:
    """The paths of one job's work directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def _path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # -- files
    @property
    def manifest_path(self) -> Path:
        return self._path(contract.JOB_FILE)

    @property
    def plan_path(self) -> Path:
        return self._path(contract.PLAN_FILE)

    @property
    def result_path(self) -> Path:
        return self._path(contract.RESULT_FILE)

    @property
    def status_path(self) -> Path:
        return self._path(contract.STATUS_FILE)

    @property
    def claim_path(self) -> Path:
        return self._path(contract.CLAIM_FILE)

    @property
    def lock_path(self) -> Path:
        return self._path(contract.LOCK_FILE)

    def stop_path(self, run_id: str) -> Path:
        return self._path(contract.STOP_FILE_PREFIX + run_id)

    def stop_paths(self) -> list[Path]:
        """Every run's stop file present (a run the grace period cut short leaves its own)."""
        return sorted(self.root.glob(contract.STOP_FILE_PREFIX + "*"))

    # -- directories
    @property
    def events_dir(self) -> Path:
        return self._path(contract.EVENTS_DIR)

    @property
    def rejects_dir(self) -> Path:
        return self._path(contract.REJECTS_DIR)

    def rejects_path(self, pid: int) -> Path:
        return self._path(contract.REJECTS_DIR, f"p{pid:05d}.jsonl")

    @property
    def checkpoints_dir(self) -> Path:
        return self._path(contract.CHECKPOINTS_DIR)

    def checkpoint_dir(self, pid: int) -> Path:
        """Partition ``pid``'s checkpoints."""
        return self._path(contract.CHECKPOINTS_DIR, f"p{pid:05d}")

    @property
    def globals_dir(self) -> Path:
        """Every global op's decision."""
        return self._path(contract.GLOBAL_DIR)

    def global_dir(self, op_idx: int) -> Path:
        """The committed decision of the global op at ``op_idx``."""
        return self._path(contract.GLOBAL_DIR, f"op{op_idx:03d}")

    # -- what is there
    def is_work_dir(self) -> bool:
        """Whether a runner has used this directory (a manifest, a status or an event log)."""
        return any(
            self._path(name).exists()
            for name in (contract.JOB_FILE, contract.STATUS_FILE, contract.EVENTS_DIR)
        )

    def has_progress(self) -> bool:
        """Whether earlier runs left a plan or checkpoints here."""
        return self.plan_path.exists() or any(
            self._path(name).exists() for name in (contract.CHECKPOINTS_DIR, contract.GLOBAL_DIR)
        )

    # -- sizes and removal (retention, ``dj-runner clean``)
    def relative(self, path: Path) -> str:
        """``path`` (under the root) as the relative POSIX entry ``remove`` takes."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def size(self, entry: str = "") -> int:
        """Bytes held by a relative entry (a file, or a directory's files); 0 when absent.
        The empty entry is the whole work dir."""
        path = self._path(*entry.split("/")) if entry else self.root
        if path.is_file():
            return path.stat().st_size
        total = 0
        for base, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.stat(os.path.join(base, name), follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # removed meanwhile
        return total

    def remove(self, entries: Iterable[str]) -> int:
        """Delete relative entries (files or directories); returns the bytes freed.

        The one place that deletes for retention: every entry is relative to the root and
        stays inside it (an entry with ``..`` or an absolute one is refused).
        """
        freed = 0
        for entry in entries:
            parts = entry.split("/")
            if not entry or entry.startswith("/") or ".." in parts:
                raise ValueError(f"retention entry {entry!r}: expected a path inside the work dir")
            path = self._path(*parts)
            size = self.size(entry)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            freed += size
        return freed

    # -- starting over
    def wipe(self, keep_events: bool = False) -> None:
        """Remove every trace of earlier runs' results (``--restart``).

        The lock and the claim stay: they order this run after the earlier ones.
        """
        for name in _RESULT_FILES:
            self._path(name).unlink(missing_ok=True)
        for name in (*_PLAN_DIRS, *(() if keep_events else (contract.EVENTS_DIR,))):
            shutil.rmtree(self._path(name), ignore_errors=True)

    def wipe_checkpoints(self) -> None:
        """Drop checkpoints, global decisions and rejects (they belong to a lost plan)."""
        for name in _PLAN_DIRS:
            shutil.rmtree(self._path(name), ignore_errors=True)
