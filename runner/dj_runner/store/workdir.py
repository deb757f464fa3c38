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
reader and writer of the work dir gets its keys here and reads and writes them through the work
dir's ``blobs`` (``store/blobs.py``): a local directory or an ``s3://bucket/prefix``, the same
layout in both. In S3 the append-only logs (``commits.jsonl``) are prefixes of one object per
record, and ``.lock`` is a lease object (``store/lease.py``) instead of a ``flock``.
"""

from __future__ import annotations

from pathlib import Path

from dj_runner import contract
from dj_runner.store.blobs import Blobs, LocalBlobs, open_blobs

#: The entries earlier runs' results live in; ``--restart`` removes them. The lock and the
#: claim are not among them: they order a run after the earlier ones.
_RESULT_FILES = (contract.JOB_FILE, contract.PLAN_FILE, contract.RESULT_FILE, contract.STATUS_FILE)
#: The entries that belong to one plan: checkpoints, global decisions, rejects.
_PLAN_DIRS = (contract.CHECKPOINTS_DIR, contract.GLOBAL_DIR, contract.REJECTS_DIR)


class WorkDir:
    """The keys of one job's work directory, and the store they live in."""

    def __init__(self, root: str | Path | Blobs):
        self.blobs = root if isinstance(root, Blobs) else open_blobs(root)
        self.uri = self.blobs.uri

    def __reduce__(self) -> tuple[object, ...]:
        return (WorkDir, (self.uri,))

    @property
    def is_local(self) -> bool:
        return self.blobs.is_local

    @property
    def root(self) -> Path:
        """The directory of a local work dir (a TypeError for one in object storage)."""
        if not isinstance(self.blobs, LocalBlobs):
            raise TypeError(f"work dir {self.uri} is not a local directory")
        return self.blobs.root

    def path(self, key: str) -> Path:
        """The local file of ``key`` (a TypeError for a work dir in object storage)."""
        return self.root.joinpath(*key.split("/"))

    def show(self, key: str) -> str:
        """``key`` as the user knows it: a path or an ``s3://`` URI."""
        return self.blobs.join(key)

    # -- keys of files
    MANIFEST = contract.JOB_FILE
    PLAN = contract.PLAN_FILE
    RESULT = contract.RESULT_FILE
    STATUS = contract.STATUS_FILE
    CLAIM = contract.CLAIM_FILE
    LOCK = contract.LOCK_FILE
    EVENTS = contract.EVENTS_DIR
    REJECTS = contract.REJECTS_DIR
    CHECKPOINTS = contract.CHECKPOINTS_DIR

    @staticmethod
    def stop_key(run_id: str) -> str:
        return contract.STOP_FILE_PREFIX + run_id

    @staticmethod
    def rejects_key(pid: int) -> str:
        return f"{contract.REJECTS_DIR}/p{pid:05d}.jsonl"

    @staticmethod
    def checkpoint_key(pid: int) -> str:
        """Partition ``pid``'s checkpoints."""
        return f"{contract.CHECKPOINTS_DIR}/p{pid:05d}"

    @staticmethod
    def global_key(op_idx: int) -> str:
        """The committed decision of the global op at ``op_idx``."""
        return f"{contract.GLOBAL_DIR}/op{op_idx:03d}"

    def stop_keys(self) -> list[str]:
        """Every run's stop file present (a run the grace period cut short leaves its own)."""
        return sorted(
            e.key
            for e in self.blobs.list("")
            if "/" not in e.key and e.key.startswith(contract.STOP_FILE_PREFIX)
        )

    # -- local paths (the tests and local-only tools read files directly)
    @property
    def manifest_path(self) -> Path:
        return self.path(self.MANIFEST)

    @property
    def plan_path(self) -> Path:
        return self.path(self.PLAN)

    @property
    def result_path(self) -> Path:
        return self.path(self.RESULT)

    @property
    def status_path(self) -> Path:
        return self.path(self.STATUS)

    @property
    def claim_path(self) -> Path:
        return self.path(self.CLAIM)

    @property
    def lock_path(self) -> Path:
        return self.path(self.LOCK)

    def stop_path(self, run_id: str) -> Path:
        return self.path(self.stop_key(run_id))

    @property
    def events_dir(self) -> Path:
        return self.path(self.EVENTS)

    @property
    def rejects_dir(self) -> Path:
        return self.path(self.REJECTS)

    def rejects_path(self, pid: int) -> Path:
        return self.path(self.rejects_key(pid))

    @property
    def checkpoints_dir(self) -> Path:
        return self.path(self.CHECKPOINTS)

    def checkpoint_dir(self, pid: int) -> Path:
        return self.path(self.checkpoint_key(pid))

    def global_dir(self, op_idx: int) -> Path:
        return self.path(self.global_key(op_idx))

    @property
    def events_uri(self) -> str:
        """Where the event log is: a directory or an ``s3://`` prefix."""
        return self.show(self.EVENTS)

    # -- what is there
    def _any(self, *keys: str) -> bool:
        return any(self.blobs.exists(key) or self.blobs.list(key) for key in keys)

    def is_work_dir(self) -> bool:
        """Whether a runner has used this directory (a manifest, a status or an event log)."""
        return self._any(contract.JOB_FILE, contract.STATUS_FILE, contract.EVENTS_DIR)

    def has_progress(self) -> bool:
        """Whether earlier runs left a plan or checkpoints here."""
        return self._any(contract.PLAN_FILE, contract.CHECKPOINTS_DIR, contract.GLOBAL_DIR)

    # -- starting over
    def wipe(self, keep_events: bool = False) -> None:
        """Remove every trace of earlier runs' results (``--restart``).

        The lock and the claim stay: they order this run after the earlier ones.
        """
        for name in _RESULT_FILES:
            self.blobs.delete(name)
        for name in (*_PLAN_DIRS, *(() if keep_events else (contract.EVENTS_DIR,))):
            self.blobs.delete_tree(name)

    def wipe_checkpoints(self) -> None:
        """Drop checkpoints, global decisions and rejects (they belong to a lost plan)."""
        for name in _PLAN_DIRS:
            self.blobs.delete_tree(name)
