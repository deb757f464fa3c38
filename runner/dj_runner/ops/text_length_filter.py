"""text_length_filter: keep samples whose character count is within [min_len, max_len]."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.common.base import MAXSIZE, Filter
from dj_runner.ops.common.registry import register


@register("text_length_filter")
@dataclass(frozen=True, kw_only=True)
class TextLengthFilter(Filter):
    """Stats key ``text_len``: the number of Unicode code points (Python ``len``)."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {"text_len": pa.int64()}

    min_len: int = 10
    max_len: int = MAXSIZE

    def __post_init__(self) -> None:
        self.check_bounds("min_len", "max_len")

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        lengths = pc.utf8_length(pc.fill_null(texts, ""))
        return {"text_len": pc.cast(lengths, pa.int64())}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        return self.in_range(stats["text_len"], self.min_len, self.max_len)
