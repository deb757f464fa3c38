"""character_repetition_filter: keep samples whose character n-gram repetition ratio is in range.

``char_rep_ratio``, as Data-Juicer computes it: count every character n-gram (``rep_len``
code points); with ``k`` distinct n-grams, ``r = min(int(sqrt(k)), number of n-grams seen more
than once)``; the ratio is the sum of the ``r`` largest counts over the number of n-grams, 0.0
when the text is shorter than ``rep_len`` (a null text counts as ``""``).

N-gram counting has no Arrow kernel. It runs in the C extension ``_kernels`` when it is built,
over the whole string array in place (``_native.char_rep_ratios``; a ``large_string`` array
takes the kernel one text at a time); ``char_rep_ratio`` is the plain Python definition, which
the tests hold both fast paths to.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from dj_runner.ops import _native
from dj_runner.ops.common.base import Filter
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import as_array, non_null

try:
    from dj_runner.ops._kernels import char_rep_ratio as _native_char_rep_ratio
except ImportError:  # installed without a C compiler
    _native_char_rep_ratio = None


def char_rep_ratio(text: str, n: int) -> float:
    """Data-Juicer's character repetition ratio of one text, in plain Python."""
    total = len(text) - n + 1
    if total <= 0:
        return 0.0
    freqs = sorted(Counter(text[i : i + n] for i in range(total)).values(), reverse=True)
    num_rep = min(int(math.sqrt(len(freqs))), len(freqs) - freqs.count(1))
    return sum(freqs[:num_rep]) / total


def char_rep_ratios(texts: pa.Array, n: int) -> pa.Array:
    """``char_rep_ratio`` of every text (nulls count as ``""``), as float64."""
    whole = _native.char_rep_ratios(as_array(texts), n)
    if whole is not None:
        return whole
    ratio = _native_char_rep_ratio or char_rep_ratio
    return pa.array([ratio(t, n) for t in non_null(texts).to_pylist()], pa.float64())


@register("character_repetition_filter")
@dataclass(frozen=True, kw_only=True)
class CharacterRepetitionFilter(Filter):
    """Stats key ``char_rep_ratio`` (float64)."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {"char_rep_ratio": pa.float64()}

    rep_len: int = 10
    min_ratio: float = 0.0
    max_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.rep_len < 1:
            raise ValueError(f"rep_len must be >= 1, got {self.rep_len}")
        self.check_bounds("min_ratio", "max_ratio")

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        return {"char_rep_ratio": char_rep_ratios(texts, self.rep_len)}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        return self.in_range(stats["char_rep_ratio"], self.min_ratio, self.max_ratio)
