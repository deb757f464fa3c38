"""Op base classes: Mapper, Filter, Deduplicator and TableOp, and their parameter validation.

An op is a frozen dataclass. Its fields are the op's parameters, with Data-Juicer's names
and defaults; the recipe loader validates names and types from the fields, and each op
checks its own ranges in ``__post_init__`` by raising ``ValueError``.

Ops work on whole Arrow arrays (one batch of the text column), never on single rows, so
that they can be vectorised with ``pyarrow.compute``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

STATS_COLUMN = "__dj__stats__"
HASH_COLUMN = "__dj__hash"


class SampleError(Exception):
    """An op failed on a sample (raised by table ops, and by ``engine.apply`` for the others); ``index`` is the first failing sample within the table, if found."""

    def __init__(self, index: int | None, preview: str | None, cause: BaseException):
        super().__init__(str(cause))
        self.index = index
        self.preview = preview
        self.cause = cause


@dataclass(frozen=True, kw_only=True)
class Op:
    """Base of every op. ``name`` is the registry name used in recipes."""

    name: ClassVar[str] = ""
    #: True when the op must see every partition before deciding (a barrier).
    is_global: ClassVar[bool] = False

    @classmethod
    def warm(cls) -> None:
        """Load what the op loads once per process (a model), ahead of its first batch: the
        local engine's fork server does, so that the workers it forks share it (``warm``)."""


@dataclass(frozen=True, kw_only=True)
class Mapper(Op):
    """Rewrites the text column."""

    def process(self, texts: pa.Array) -> pa.Array:
        """Return the new text array, same length as ``texts``; nulls stay null."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Filter(Op):
    """Computes stats per sample and keeps the samples whose stats are in range."""

    #: The stats keys this filter writes under ``__dj__stats__``, with their Arrow types.
    stats_types: ClassVar[dict[str, pa.DataType]] = {}

    min_closed_interval: bool = True
    max_closed_interval: bool = True
    reversed_range: bool = False

    def check_bounds(self, lo: str, hi: str) -> None:
        """The range checks every filter shares: ``lo >= 0`` and ``hi >= lo``."""
        low, high = getattr(self, lo), getattr(self, hi)
        if low < 0:
            raise ValueError(f"{lo} must be >= 0, got {low}")
        if high < low:
            raise ValueError(f"{hi} ({high}) must be >= {lo} ({low})")

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        """Return one array per stats key, each the same length as ``texts``."""
        raise NotImplementedError

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        """Return a boolean array: True where the sample is kept."""
        raise NotImplementedError

    def in_range(self, values: pa.Array, lo: float | None, hi: float | None) -> pa.Array:
        """Data-Juicer's ``get_keep_boolean``: honours closed intervals and reversed_range.

        A null value is never kept.
        """
        mask = pa.array([True] * len(values), type=pa.bool_())
        if pa.types.is_floating(values.type):
            # Arrow will not compare float64 with an int beyond 2**53 (e.g. sys.maxsize).
            lo = None if lo is None else float(lo)
            hi = None if hi is None else float(hi)
        if lo is not None:
            cmp = pc.greater_equal if self.min_closed_interval else pc.greater
            mask = pc.and_(mask, cmp(values, lo))
        if hi is not None:
            cmp = pc.less_equal if self.max_closed_interval else pc.less
            mask = pc.and_(mask, cmp(values, hi))
        if self.reversed_range:
            mask = pc.invert(mask)
        return pc.fill_null(mask, False)


@dataclass(frozen=True, kw_only=True)
class TableOp(Op):
    """A mapper or filter over whole tables; rows may be rewritten, dropped or added.

    For ops that need every column of a sample, not just the text (the Data-Juicer bridge is
    one): ``engine.apply.apply_local`` hands it the partition's table and takes back the new
    one; checkpoints, events and resume treat it like any other op. It reports a failing
    sample by raising ``SampleError`` with the sample's index in the table.
    """

    def apply_table(self, table: pa.Table, text_key: str) -> pa.Table:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Deduplicator(Op):
    """A global op: signature columns per partition, then one decision over all of them.

    Each partition computes ``signatures`` (checkpointed with its rows); the driver reads the
    ``signature_columns`` of every partition in plan order and ``decide`` returns the keep
    mask of each partition. The default is exact deduplication: ``compute_hash`` fills
    ``__dj__hash`` and the first sample of each hash is kept.
    """

    is_global: ClassVar[bool] = True

    def compute_hash(self, texts: pa.Array) -> pa.Array:
        """Return a string array of hashes, same length as ``texts``."""
        raise NotImplementedError

    @property
    def signature_columns(self) -> tuple[str, ...]:
        """The columns ``signatures`` adds; dropped again once the decision is applied."""
        return (HASH_COLUMN,)

    def signatures(self, table: pa.Table, text_key: str) -> dict[str, pa.Array]:
        """One array per signature column, each as long as ``table``."""
        col = table.column(text_key)
        texts = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if pa.types.is_large_string(texts.type):
            texts = texts.cast(pa.string())
        return {HASH_COLUMN: self.compute_hash(texts)}

    def decide(self, partitions: Iterable[tuple[int, pa.Table]]) -> dict[int, pa.Array]:
        """Keep masks by partition id from ``(pid, signature table)`` pairs in plan order."""
        from dj_runner.ops.common.keep_first import first_occurrence

        return first_occurrence(partitions, HASH_COLUMN)


MAXSIZE = sys.maxsize
