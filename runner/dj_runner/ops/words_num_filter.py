"""words_num_filter: keep samples whose word count is within [min_num, max_num].

Words as Data-Juicer counts them without a tokenizer: the text split on ``' '``, ``'\n'`` and
``'\t'`` only, each piece stripped of ``SPECIAL_CHARACTERS`` at both ends, empty pieces
dropped. A piece survives exactly when it holds one non-special character, so the count is
vectorised: one pass over the batch's bytes in C (``_kernels.count_words``) when the extension is
built, else one RE2 pass; both count those pieces. A null text counts as ``""``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops import _native as native
from dj_runner.ops.common.base import MAXSIZE, Filter
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import (
    TOKENIZATION_UNSUPPORTED,
    non_null,
    special_class,
)


def count_words(texts: pa.Array) -> pa.Array:
    """Data-Juicer's refined word count (no tokenizer, no lower-casing), as int64.

    In C when built (the same definition, piece by piece), else one RE2 pass: a match runs
    from a piece's start through its last non-special character and on to the piece's end. Separators are special, so no match starts at one, and a piece
    with no non-special character (one the strip would leave empty) never matches; the
    number of matches is the number of words.
    """
    arr = non_null(texts)
    counts = native.count_words(arr, native.special_bitmap())
    if counts is not None:
        return counts
    piece = "[^ \n\t]*"
    pattern = piece + special_class(True) + piece
    return pc.cast(pc.count_substring_regex(arr, pattern=pattern), pa.int64())


@register("words_num_filter")
@dataclass(frozen=True, kw_only=True)
class WordsNumFilter(Filter):
    """Stats key ``num_words``: the number of words after Data-Juicer's refinement."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {"num_words": pa.int64()}

    lang: str = "en"
    tokenization: bool = False
    min_num: int = 10
    max_num: int = MAXSIZE

    def __post_init__(self) -> None:
        if self.tokenization:
            raise ValueError(TOKENIZATION_UNSUPPORTED)
        self.check_bounds("min_num", "max_num")

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        return {"num_words": count_words(texts)}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        return self.in_range(stats["num_words"], self.min_num, self.max_num)
