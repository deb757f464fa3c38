"""alphanumeric_filter: keep samples whose alphanumeric character ratio is in range.

``alnum_ratio`` = (characters with ``str.isalnum()``) / ``len(text)``, 0.0 for an empty text
(a null text counts as ``""``). Counted over the whole batch in C (``_kernels.count_in_set``
against the set of code points for which ``str.isalnum`` holds, built by the same test
``str.isalnum`` applies to one character) when the extension is built, else per sample with
``str.isalnum`` itself; either is exact, and both beat an RE2 count over the class of its code
points. Only ``tokenization=False`` is supported (the token-based ratio needs a Hugging Face
tokenizer download).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops import _native as native
from dj_runner.ops.common.base import MAXSIZE, Filter
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import TOKENIZATION_UNSUPPORTED, non_null, safe_ratio


def count_alnum(text: str) -> int:
    """The number of characters of ``text`` for which ``str.isalnum`` holds, in plain Python."""
    return sum(map(str.isalnum, text))


@register("alphanumeric_filter")
@dataclass(frozen=True, kw_only=True)
class AlphanumericFilter(Filter):
    """Stats key ``alnum_ratio`` (float64)."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {"alnum_ratio": pa.float64()}

    tokenization: bool = False
    min_ratio: float = 0.25
    max_ratio: float = MAXSIZE

    def __post_init__(self) -> None:
        if self.tokenization:
            raise ValueError(TOKENIZATION_UNSUPPORTED)
        self.check_bounds("min_ratio", "max_ratio")

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        arr = non_null(texts)
        bitmap = native.alnum_bitmap()
        alnum = None if bitmap is None else native.count_in_set(arr, bitmap)
        if alnum is None:
            alnum = pa.array([count_alnum(t) for t in arr.to_pylist()], pa.int64())
        return {"alnum_ratio": safe_ratio(alnum, pc.utf8_length(arr))}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        return self.in_range(stats["alnum_ratio"], self.min_ratio, self.max_ratio)
