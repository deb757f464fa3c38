"""average_line_length_filter: keep samples whose average line length is in range.

``avg_line_length`` = ``len(text) / len(text.splitlines())``, 0.0 when there are no lines (an
empty or null text). Note the numerator is the whole text, line breaks included. Vectorised:
the number of ``splitlines`` lines is the number of line breaks (``\r\n`` counts once; the
breaks are ``str.splitlines``' set, U+2028/2029, U+0085, U+001C..U+001E, VT and FF included)
plus one when the text is non-empty and does not end with a break: counted in one pass over the
array's bytes by the C extension (``_native.line_stats``), else by Arrow's regex kernels.
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
    non_null,
    safe_ratio,
)


def count_lines(texts: pa.Array) -> pa.Array:
    """``len(text.splitlines())`` per text, as int64 (null counts as ``""``)."""
    stats = _native.line_stats(as_array(texts))
    if stats is not None:
        return stats[1]
    arr = non_null(texts)
    breaks_class = chars_class(LINE_BREAK_CHARS)
    breaks = pc.count_substring_regex(arr, pattern=f"\r\n|{breaks_class}")
    ends_open = pc.and_(
        pc.greater(pc.utf8_length(arr), 0),
        pc.invert(pc.match_substring_regex(arr, pattern=f"{breaks_class}$")),
    )
    return pc.add(pc.cast(breaks, pa.int64()), pc.cast(ends_open, pa.int64()))


@register("average_line_length_filter")
@dataclass(frozen=True, kw_only=True)
class AverageLineLengthFilter(Filter):
    """Stats key ``avg_line_length`` (float64)."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {"avg_line_length": pa.float64()}

    min_len: int = 10
    max_len: int = MAXSIZE

    def __post_init__(self) -> None:
        self.check_bounds("min_len", "max_len")

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        arr = non_null(texts)
        return {"avg_line_length": safe_ratio(pc.utf8_length(arr), count_lines(arr))}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        return self.in_range(stats["avg_line_length"], self.min_len, self.max_len)
