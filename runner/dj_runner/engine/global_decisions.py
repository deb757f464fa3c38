"""Decisions of global ops: from every partition's signature columns to keep masks.

A global op (``ops.base.Deduplicator``) computes signature columns per partition, which are
checkpointed with the rows; the driver then reads them partition by partition, in plan order,
and the op's ``decide`` turns them into one keep mask per partition. The order of the rows
seen by ``decide`` is the input order, so "first" below always means first in the input.

This module holds the decisions shared by several ops, the union-find they build on, and the
committed decision of a global op (``GlobalDecision``), read and saved in the work dir's
``global/opNNN/`` as a one-checkpoint store.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey
from dj_runner.store.fencing import Fence
from dj_runner.store.workdir import WorkDir

#: ``(partition id, table of the op's signature columns)``, in plan order.
PartitionColumns = Iterable[tuple[int, pa.Table]]


def first_occurrence(partitions: PartitionColumns, column: str) -> dict[int, pa.Array]:
    """Keep the first row of each distinct value of ``column`` (exact deduplication)."""
    seen: set[Hashable] = set()
    masks: dict[int, pa.Array] = {}
    for pid, table in partitions:
        keep = []
        for value in table.column(column).to_pylist():
            keep.append(value not in seen)
            seen.add(value)
        masks[pid] = pa.array(keep, pa.bool_())
    return masks


def first_of_each_group(
    partitions: PartitionColumns, group_of: Iterable[Hashable]
) -> dict[int, pa.Array]:
    """Keep the first row of each group; ``group_of`` yields one group key per row, in order."""
    groups = iter(group_of)
    seen: set[Hashable] = set()
    masks: dict[int, pa.Array] = {}
    for pid, table in partitions:
        keep = []
        for _ in range(table.num_rows):
            g = next(groups)
            keep.append(g not in seen)
            seen.add(g)
        masks[pid] = pa.array(keep, pa.bool_())
    return masks


class UnionFind:
    """Disjoint sets over the integers ``0..n-1``; a set's root is its smallest member."""

    def __init__(self, n: int = 0) -> None:
        self.parent: list[int] = list(range(n))

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            low = min(rx, ry)
            self.parent[rx] = self.parent[ry] = low

    def roots(self) -> Iterator[int]:
        for i in range(len(self.parent)):
            yield self.find(i)


def split_masks(partitions: list[tuple[int, int]], keep: list[bool]) -> dict[int, pa.Array]:
    """Cut one input-order keep list into masks per partition (``(pid, rows)`` in order)."""
    masks: dict[int, pa.Array] = {}
    start = 0
    for pid, rows in partitions:
        masks[pid] = pa.array(keep[start : start + rows], pa.bool_())
        start += rows
    if start != len(keep):
        raise ValueError(f"keep list has {len(keep)} entries for {start} rows")
    return masks


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
    return CheckpointDir(work.global_dir(op_idx), "arrow", "lz4", fence=fence)


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
