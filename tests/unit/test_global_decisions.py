"""Global-op decisions: exact, MinHash (LSH bands + union-find) and the interface itself."""

from __future__ import annotations

import random

import pyarrow as pa

from dj_runner.dj_ops.dedup import MINHASH, _minhash_decision
from dj_runner.ops.common.keep_first import UnionFind, first_occurrence, split_masks
from dj_runner.recipe.parse import build_op


def parts(column: str, values: list, sizes: list[int], typ: pa.DataType) -> list:
    out, start = [], 0
    for pid, n in enumerate(sizes):
        out.append((pid, pa.table({column: pa.array(values[start : start + n], typ)})))
        start += n
    return out


def test_union_find_root_is_the_smallest_member():
    uf = UnionFind(6)
    uf.union(4, 2)
    uf.union(5, 4)
    uf.union(3, 1)
    assert [uf.find(i) for i in range(6)] == [0, 1, 2, 1, 2, 2]


def test_first_occurrence_across_partitions():
    masks = first_occurrence(parts("h", list("abacbd"), [2, 3, 1], pa.string()), "h")
    assert [masks[p].to_pylist() for p in range(3)] == [[True, True], [False, True, False], [True]]


def dj_minhash_reference(signatures: list[list[bytes]]) -> list[bool]:
    """Data-Juicer's own algorithm, transcribed: band tables of index sets, union with min."""
    tables: list[dict[bytes, set[int]]] = [{} for _ in signatures[0]]
    for idx, bands in enumerate(signatures):
        for table, h in zip(tables, bands, strict=True):
            table.setdefault(h, set()).add(idx)
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        if parent[x] != x:
            parent[x] = find(parent[x])
        return parent[x]

    for table in tables:
        for cluster in table.values():
            if len(cluster) > 1:
                low = min(cluster)
                for x in cluster:
                    px, py = find(x), find(low)
                    parent[px] = parent[py] = min(px, py)
    return [find(i) == i for i in range(len(signatures))]


def test_minhash_decision_equals_data_juicers_on_random_band_collisions():
    rng = random.Random(7)
    for _ in range(20):
        n, bands = rng.randint(2, 60), rng.randint(1, 6)
        sigs = [[bytes([rng.randint(0, 5)]) for _ in range(bands)] for _ in range(n)]
        sizes = []
        left = n
        while left:
            sizes.append(min(left, rng.randint(1, 9)))
            left -= sizes[-1]
        masks = _minhash_decision(parts(MINHASH, sigs, sizes, pa.list_(pa.binary())))
        ours = [k for p in range(len(sizes)) for k in masks[p].to_pylist()]
        assert ours == dj_minhash_reference(sigs)


def test_split_masks_checks_the_count():
    assert split_masks([(0, 1), (3, 2)], [True, False, True])[3].to_pylist() == [False, True]
    try:
        split_masks([(0, 1)], [True, True])
    except ValueError as exc:
        assert "2 entries for 1 rows" in str(exc)
    else:
        raise AssertionError("a wrong count must fail")


def test_builtin_deduplicator_goes_through_the_generic_interface():
    op = build_op("document_deduplicator", {}, "p").op
    table = pa.table({"text": ["a", "b", "a ", "c"]})
    cols = op.signatures(table, "text")
    assert list(cols) == list(op.signature_columns) == ["__dj__hash"]
    masks = op.decide([(0, pa.table(cols).slice(0, 2)), (1, pa.table(cols).slice(2))])
    assert masks[0].to_pylist() == [True, True] and masks[1].to_pylist() == [False, True]
