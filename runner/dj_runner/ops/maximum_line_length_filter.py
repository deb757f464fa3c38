"""maximum_line_length_filter: keep samples whose longest line is within [min_len, max_len].

``max_line_length`` = the longest ``str.splitlines()`` line in code points, 0 for an empty or
null text. With the C extension, one pass over the array's bytes (``_native.line_stats``).
Without it, vectorised: split on the same line breaks (``\r\n`` once) and take the maximum
piece length per text; the extra empty piece a split yields after a final break (or for ``""``)
has length 0 and never changes the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops import _native
from dj_runner.ops.common.base import MAXSIZE, Filter
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import (
    LINE_BREAK_CHARS,
    as_array,
    chars_class,
    list_segment_max,
    non_null,
)


@register("maximum_line_length_filter")
@dataclass(frozen=True, kw_only=True)
class MaximumLineLengthFilter(Filter):
    """Stats key ``max_line_length`` (int64)."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {"max_line_length": pa.int64()}

    min_len: int = 10
    max_len: int = MAXSIZE

    def __post_init__(self) -> None:
        self.check_bounds("min_len", "max_len")

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        stats = _native.line_stats(as_array(texts))
        if stats is not None:
            return {"max_line_length": stats[0]}
        pattern = "\r\n|" + chars_class(LINE_BREAK_CHARS)
        lines = pc.split_pattern_regex(non_null(texts), pattern=pattern)
        lengths = pc.utf8_length(pc.list_flatten(lines))
        return {"max_line_length": list_segment_max(lines, lengths)}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        return self.in_range(stats["max_line_length"], self.min_len, self.max_len)
