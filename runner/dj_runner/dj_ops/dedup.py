"""Data-Juicer's document-level deduplicators as global ops of the runner.

Each partition runs Data-Juicer's own ``compute_hash`` on its samples and checkpoints the
result as a column (``__dj__hash``, ``__dj__minhash``, ``__dj__simhash``, Data-Juicer's
names). The driver then reads those columns partition by partition, in input order, and
decides once, with Data-Juicer's semantics:

- ``document_deduplicator``: the first sample of each md5 hash is kept.
- ``document_minhash_deduplicator``: samples sharing any LSH band are joined (union-find);
  the first sample of each cluster in input order is kept (Data-Juicer keeps the sample whose
  index is its cluster's root, the smallest index).
- ``document_simhash_deduplicator``: simhashes within ``hamming_distance`` (found by
  ``simhash.find_all`` over ``num_blocks`` blocks) form connected clusters; the first sample
  of each cluster is kept, and samples whose simhash has no near neighbour are deduplicated
  by the exact simhash value.

The decision holds one band table per LSH band (MinHash) or one 64-bit value per sample
(SimHash) in the driver: memory grows with the number of samples, not their size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dj_runner.dj_ops.bridge import dj_instance
from dj_runner.ops.common.base import Deduplicator, SampleError
from dj_runner.ops.common.keep_first import UnionFind, first_occurrence, split_masks

HASH = "__dj__hash"
MINHASH = "__dj__minhash"
SIMHASH = "__dj__simhash"

SIGNATURE_COLUMN = {
    "document_deduplicator": HASH,
    "document_minhash_deduplicator": MINHASH,
    "document_simhash_deduplicator": SIMHASH,
}
SIGNATURE_TYPE = {HASH: pa.string(), MINHASH: pa.list_(pa.binary()), SIMHASH: pa.string()}


@dataclass(frozen=True, kw_only=True)
class DJDocumentDeduplicator(Deduplicator):
    """One of Data-Juicer's document-level deduplicators, as a global op."""

    dj_name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.dj_name)

    @property
    def column(self) -> str:
        return SIGNATURE_COLUMN[self.dj_name]

    @property
    def signature_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def signatures(self, table: pa.Table, text_key: str) -> dict[str, pa.Array]:
        op = dj_instance(self.dj_name, self.params, text_key)
        column = self.column
        texts = table.column(text_key).to_pylist()
        values: list[Any] = []
        for i, text in enumerate(texts):
            # compute_hash only reads the text; a sample of the text alone keeps it cheap.
            try:
                sample = op.compute_hash({text_key: "" if text is None else text})
            except Exception as exc:
                preview = text[:200] if isinstance(text, str) else None
                raise SampleError(i, preview, exc) from exc
            values.append(sample[column])
        return {column: pa.array(values, SIGNATURE_TYPE[column])}

    def decide(self, partitions: Iterable[tuple[int, pa.Table]]) -> dict[int, pa.Array]:
        if self.column == HASH:
            return first_occurrence(partitions, HASH)
        if self.column == MINHASH:
            return _minhash_decision(partitions)
        return self._simhash_decision(partitions)

    def _simhash_decision(self, partitions: Iterable[tuple[int, pa.Table]]) -> dict[int, pa.Array]:
        import numpy as np
        import simhash

        op = dj_instance(self.dj_name, self.params, "text")
        layout: list[tuple[int, int]] = []
        values: list[str] = []
        for pid, table in partitions:
            column = table.column(SIMHASH).to_pylist()
            layout.append((pid, len(column)))
            values.extend(column)
        if len(values) <= 1:
            return split_masks(layout, [True] * len(values))
        matches = simhash.find_all(
            np.uint64([int(v) for v in values]), op.num_blocks, op.hamming_distance
        )
        ids: dict[str, int] = {}
        uf = UnionFind()

        def node(h: str) -> int:
            if h not in ids:
                ids[h] = uf.add()
            return ids[h]

        for x, y in matches:
            uf.union(node(str(x)), node(str(y)))
        seen_clusters: set[int] = set()
        seen_hashes: set[str] = set()
        keep = []
        for h in values:
            if h in ids:  # has a near neighbour: one sample per cluster
                c = uf.find(ids[h])
                keep.append(c not in seen_clusters)
                seen_clusters.add(c)
            else:
                keep.append(h not in seen_hashes)
                seen_hashes.add(h)
        return split_masks(layout, keep)


def _minhash_decision(partitions: Iterable[tuple[int, pa.Table]]) -> dict[int, pa.Array]:
    layout: list[tuple[int, int]] = []
    bands: list[dict[bytes, int]] = []
    uf = UnionFind()
    for pid, table in partitions:
        column = table.column(MINHASH).to_pylist()
        layout.append((pid, len(column)))
        for band_values in column:
            idx = uf.add()
            if len(bands) < len(band_values):
                bands.extend({} for _ in range(len(band_values) - len(bands)))
            for table_, h in zip(bands, band_values, strict=False):
                first = table_.setdefault(h, idx)
                if first != idx:
                    uf.union(first, idx)
    keep = [uf.find(i) == i for i in range(len(uf.parent))]
    return split_masks(layout, keep)
