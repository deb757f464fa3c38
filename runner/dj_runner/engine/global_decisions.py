"""Decisions of global ops: from every partition's signature columns to keep masks.

A global op (``ops.base.Deduplicator``) computes signature columns per partition, which are
checkpointed with the rows; the driver then reads them partition by partition, in plan order,
and the op's ``decide`` turns them into one keep mask per partition. The order of the rows
seen by ``decide`` is the input order, so "first" below always means first in the input.

This module holds the committed decision of a global op (``GlobalDecision``), read and saved in
the work dir's ``global/opNNN/`` as a one-checkpoint store; the decisions shared by several ops
and the union-find they build on are ``ops.common.keep_first``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey
from dj_runner.store.fencing import Fence
from dj_runner.store.workdir import WorkDir


def removed(masks: dict[int, pa.Array]) -> int:
    """How many rows a decision drops, over all partitions."""
    return sum(len(m) - m.true_count for m in masks.values())


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


def _decision_store(work: WorkDir, op_idx: int, fence: Fence | None) -> CheckpointDir:
    return CheckpointDir(work.show(work.global_key(op_idx)), "arrow", "lz4", fence=fence)


def read_decision(work: WorkDir, op_idx: int, fence: Fence | None) -> GlobalDecision | None:
    """The committed decision of the global op at ``op_idx``, or None before it is decided
    (with ``fence``, a decision of another plan or of a superseded run does not count)."""
    found = _decision_store(work, op_idx, fence).newest_valid()
    return None if found is None else GlobalDecision.from_table(found[1])


def save_decision(
    work: WorkDir, op_idx: int, op_name: str, decision: GlobalDecision, fence: Fence | None
) -> None:
    """Commit the decision of the global op at ``op_idx`` (fenced by the run's claim)."""
    _decision_store(work, op_idx, fence).save(CheckpointKey(0), decision.to_table(), op_name)
