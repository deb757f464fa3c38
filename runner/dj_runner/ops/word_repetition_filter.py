"""word_repetition_filter: keep samples whose word n-gram repetition ratio is in range.

``word_rep_ratio``, as Data-Juicer computes it without a tokenizer: words split on ``' '``,
``'\n'``, ``'\t'``; each lower-cased (Python ``str.lower``), then stripped of
``SPECIAL_CHARACTERS`` at both ends, empty ones dropped; count the n-grams of ``rep_len``
consecutive words; the ratio is the number of n-gram occurrences whose n-gram occurs more than
once over the number of n-grams, 0.0 with fewer than ``rep_len`` words (a null text counts as
``""``).

With the C extension ``_kernels``, a text that ``str.lower`` changes only in its ASCII letters
(most texts: 99% of the bench's, once the normalisation mappers have run) is done whole in C
over the array's buffers (``_native.simple_word_rep_ratios``). Any other text takes the general
path: lower-casing per sample (``str.lower``'s special and final-sigma casing has no exact Arrow
kernel), then, batch-wide, Arrow kernels split, strip and dictionary-encode the words and the
extension counts each sample's n-grams of word ids. Without the extension, each sample runs
``word_rep_ratio``, the plain Python definition, which the tests hold both fast paths to.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops import _native
from dj_runner.ops.common.base import Filter
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import (
    SPECIAL_CHARACTERS_STR,
    TOKENIZATION_UNSUPPORTED,
    non_null,
    refine_words,
    split_words,
)

try:
    from dj_runner.ops._kernels import word_rep_ratios as _count_word_ngrams
except ImportError:  # installed without a C compiler
    _count_word_ngrams = None


def word_rep_ratio(text: str, n: int) -> float:
    """Data-Juicer's word repetition ratio of one text, in plain Python."""
    words = refine_words(split_words(text), lower_case=True)
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    counts = Counter(tuple(words[i : i + n]) for i in range(total))
    return sum(c for c in counts.values() if c > 1) / total


def word_rep_ratios(texts: pa.Array, n: int) -> pa.Array:
    """``word_rep_ratio`` of every text (nulls count as ``""``), as float64."""
    texts = non_null(texts)
    simple_first = _native.simple_word_rep_ratios(texts, n)
    if simple_first is None:
        return _general_word_rep_ratios(texts, n)
    ratios, others = simple_first
    if not others:
        return ratios
    merged = ratios.to_pylist()
    for i, ratio in zip(
        others, _general_word_rep_ratios(texts.take(others), n).to_pylist(), strict=True
    ):
        merged[i] = ratio
    return pa.array(merged, pa.float64())


def _general_word_rep_ratios(texts: pa.Array, n: int) -> pa.Array:
    """``word_rep_ratio`` of every text of a null-free array, any text: Python lower-casing
    per sample, then Arrow kernels and the n-gram counting kernel (or the plain definition)."""
    pylist = texts.to_pylist()
    if _count_word_ngrams is None:
        return pa.array([word_rep_ratio(t, n) for t in pylist], pa.float64())
    # Lower-casing each text whole equals lower-casing each word: str.lower works per
    # character except the final sigma, whose context never crosses ' ', '\n' or '\t'.
    # large_string: lower-casing can lengthen a text, so a batch may outgrow 2 GiB of string data
    lowered = pa.array(
        [t.lower().replace("\n", " ").replace("\t", " ") for t in pylist], pa.large_string()
    )
    pieces = pc.split_pattern(lowered, pattern=" ")
    words = pc.utf8_trim(pc.list_flatten(pieces), characters=SPECIAL_CHARACTERS_STR)
    kept = pc.not_equal(words, "")
    # Each sample's words start where its pieces start, counted in kept words.
    kept_before = pa.concat_arrays(
        [pa.array([0], pa.int64()), pc.cumulative_sum(pc.cast(kept, pa.int64()))]
    )
    offsets = pc.take(kept_before, pc.subtract(pieces.offsets, pieces.offsets[0]))
    ids = pc.dictionary_encode(pc.filter(words, kept)).indices.cast(pa.int32())
    ratios = _count_word_ngrams(_values(ids, 4), _values(offsets, 8), n)
    return pa.array(ratios, pa.float64())


def _values(arr: pa.Array, width: int) -> memoryview:
    """The value bytes of a null-free fixed-width array, honouring its offset."""
    return memoryview(arr.buffers()[1])[arr.offset * width : (arr.offset + len(arr)) * width]


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
        return {"word_rep_ratio": word_rep_ratios(texts, self.rep_len)}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        return self.in_range(stats["word_rep_ratio"], self.min_ratio, self.max_ratio)
