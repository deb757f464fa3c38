"""Global-op decisions: which rows of each partition a deduplicator keeps, across all of them.

Pure: given every partition's row hashes in plan order, keep the first occurrence of each
hash in the whole input and drop the later ones, as Data-Juicer's deduplicators do on one
table. The executor loads the hashes from the partitions' hashed checkpoints and commits
the result as a ``GlobalDecision``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa


def keep_first_masks(hashes: Iterable[tuple[int, Sequence[str]]]) -> dict[int, pa.Array]:
    """``(pid, hashes)`` in plan order -> per partition, a boolean mask of the rows kept."""
    seen: set[str] = set()
    masks: dict[int, pa.Array] = {}
    for pid, part_hashes in hashes:
        keep = []
        for h in part_hashes:
            keep.append(h not in seen)
            seen.add(h)
        masks[pid] = pa.array(keep, pa.bool_())
    return masks


def removed(masks: dict[int, pa.Array]) -> int:
    return sum(len(m) - m.true_count for m in masks.values())
