"""The work directory's layout and its job manifest.

<work_dir>/job.json              job id, recipe fingerprint, what decides the output
<work_dir>/plan.json             the partition plan, written once
<work_dir>/checkpoints/pNNNNN/   a partition's checkpoints and commits.jsonl
<work_dir>/global/opNNN/         a global op's committed decision
<work_dir>/rejects/pNNNNN.jsonl  malformed input records, with source file and line
<work_dir>/events/               the event log
<work_dir>/result.json           the last run's outcome
<work_dir>/status.json           the current run's live status (status_file.py)
<work_dir>/claim.json            the newest run's claim (fencing.py)
<work_dir>/.lock                 the live runner's lock and who it is (lock.py)
<work_dir>/.stop-<run id>        asks the run's partition tasks to stop after their checkpoint
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from dj_runner.recipe.parse import Recipe
from dj_runner.store.atomic import write_json_atomic
from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey
from dj_runner.store.fencing import Fence


@dataclass(frozen=True)
class GlobalDecision:
    """Which rows of each partition a global op keeps."""

    masks: dict[int, pa.Array]

    def mask_for(self, pid: int) -> pa.Array:
        return self.masks[pid]

    def to_table(self) -> pa.Table:
        pids = sorted(self.masks)
        return pa.table(
            {
                "pid": pa.array(pids, pa.int32()),
                "keep": pa.array([self.masks[p] for p in pids], pa.list_(pa.bool_())),
            }
        )

    @classmethod
    def from_table(cls, table: pa.Table) -> GlobalDecision:
        keep = table.column("keep").combine_chunks()
        return cls(
            {int(pid): keep[i].values for i, pid in enumerate(table.column("pid").to_pylist())}
        )


class WorkDir:
    """Paths and small state files of one job's work directory."""

    def __init__(self, root: str | Path, fence: Fence | None = None):
        self.root = Path(root).resolve()
        self.fence = fence

    # -- paths
    @property
    def manifest_path(self) -> Path:
        return self.root / "job.json"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    @property
    def result_path(self) -> Path:
        return self.root / "result.json"

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    def stop_path(self, run_id: str) -> Path:
        return self.root / f".stop-{run_id}"

    def stop_requested(self) -> bool:
        """Whether this run's driver asked its partition tasks to stop (SIGTERM)."""
        return self.fence is not None and self.stop_path(self.fence.run_id).exists()

    def rejects_path(self, pid: int) -> Path:
        path = self.root / "rejects" / f"p{pid:05d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def count_rejects(self, pid: int) -> int:
        """The malformed records set aside for partition ``pid`` (lines of its rejects file)."""
        try:
            with open(self.root / "rejects" / f"p{pid:05d}.jsonl", "rb") as fh:
                return sum(1 for _ in fh)
        except FileNotFoundError:
            return 0

    def has_progress(self) -> bool:
        """Whether earlier runs left a plan or checkpoints here."""
        return self.plan_path.exists() or any(
            (self.root / name).exists() for name in ("checkpoints", "global")
        )

    def partition_store(self, pid: int, recipe: Recipe) -> CheckpointDir:
        ck = recipe.checkpoint
        return CheckpointDir(
            self.root / "checkpoints" / f"p{pid:05d}",
            ck.storage_format,
            ck.compression,
            ck.preserve_intermediate_data,
            self.fence,
        )

    def _global_store(self, op_idx: int) -> CheckpointDir:
        return CheckpointDir(
            self.root / "global" / f"op{op_idx:03d}", "arrow", "lz4", fence=self.fence
        )

    # -- global op decisions
    def global_decision(self, op_idx: int) -> GlobalDecision | None:
        found = self._global_store(op_idx).newest_valid()
        return None if found is None else GlobalDecision.from_table(found[1])

    def save_global_decision(self, op_idx: int, op_name: str, decision: GlobalDecision) -> None:
        self._global_store(op_idx).save(CheckpointKey(0), decision.to_table(), op_name)

    # -- manifest
    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when there is none; DamagedState when it is unreadable."""
        import json

        try:
            data = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DamagedState(self.manifest_path, str(exc)) from None
        if not isinstance(data, dict) or not {"job_id", "fingerprint"} <= set(data):
            raise DamagedState(self.manifest_path, "not a job manifest")
        return data

    def write_manifest(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.manifest_path, data)

    def wipe(self, keep_events: bool = False) -> None:
        """Remove every trace of earlier runs' results (``--restart``).

        The lock and the claim stay: they order this run after the earlier ones.
        """
        for name in ("job.json", "plan.json", "result.json", "status.json"):
            (self.root / name).unlink(missing_ok=True)
        for name in ("checkpoints", "global", "rejects", *(() if keep_events else ("events",))):
            shutil.rmtree(self.root / name, ignore_errors=True)

    def wipe_checkpoints(self) -> None:
        """Drop checkpoints, global decisions and rejects (they belong to a lost plan)."""
        for name in ("checkpoints", "global", "rejects"):
            shutil.rmtree(self.root / name, ignore_errors=True)


class DamagedState(Exception):
    """A state file of the work dir cannot be read."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        super().__init__(f"{path} is damaged ({why})")
