"""Keep-first decisions of global ops: from every partition's signature columns to keep masks.

A global op's ``decide`` sees the partitions' signature columns in plan order, so the order of
the rows is the input order and "first" always means first in the input. Shared by the built-in
deduplicator and Data-Juicer's: exact first occurrence, first of each group, the union-find that
groups near-duplicates, and the split of one keep list into per-partition masks.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator

import pyarrow as pa

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
