"""word_repetition_filter: keep samples whose word n-gram repetition ratio is in range.

``word_rep_ratio``, as Data-Juicer computes it without a tokenizer: words split on ``' '``,
``'\n'``, ``'\t'``; each lower-cased (Python ``str.lower``), then stripped of
``SPECIAL_CHARACTERS`` at both ends, empty ones dropped; count the n-grams of ``rep_len``
consecutive words; the ratio is the number of n-gram occurrences whose n-gram occurs more than
once over the number of n-grams, 0.0 with fewer than ``rep_len`` words (a null text counts as
``""``).

Per-sample: ``str.lower`` (special and final-sigma casing) and n-gram counting have no exact
Arrow kernel.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from dj_runner.ops.base import Filter
from dj_runner.ops.registry import register
from dj_runner.ops.textutil import TOKENIZATION_UNSUPPORTED, non_null, refine_words, split_words


def word_rep_ratio(text: str, n: int) -> float:
    """Data-Juicer's word repetition ratio of one text."""
    words = refine_words(split_words(text), lower_case=True)
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    counts = Counter(tuple(words[i : i + n]) for i in range(total))
    return sum(c for c in counts.values() if c > 1) / total


@register("word_repetition_filter")
@dataclass(frozen=True, kw_only=True)
class WordRepetitionFilter(Filter):
    """Stats key ``word_rep_ratio`` (float64)."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {"word_rep_ratio": pa.float64()}

    lang: str = "en"
    tokenization: bool = False
    rep_len: int = 10
    min_ratio: float = 0.0
    max_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.tokenization:
            raise ValueError(TOKENIZATION_UNSUPPORTED)
        if self.rep_len < 1:
            raise ValueError(f"rep_len must be >= 1, got {self.rep_len}")
        self.check_bounds("min_ratio", "max_ratio")

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        ratios = [word_rep_ratio(t, self.rep_len) for t in non_null(texts).to_pylist()]
        return {"word_rep_ratio": pa.array(ratios, pa.float64())}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        return self.in_range(stats["word_rep_ratio"], self.min_ratio, self.max_ratio)
