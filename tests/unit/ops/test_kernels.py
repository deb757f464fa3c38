"""The C kernels (``dj_runner.ops._kernels``) against the plain-Python definitions.

Several filters run their per-sample hot loops in C; these tests hold each kernel to the Python
definition in its op module (which the other op tests hold to Data-Juicer) on real text, on
edge cases and on seeded random text, and check that the extension is really built.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from dj_runner.ops import _native as native
from dj_runner.ops import alphanumeric_filter as anf
from dj_runner.ops import character_repetition_filter as crf
from dj_runner.ops import special_characters_filter as scf
from dj_runner.ops import word_repetition_filter as wrf
from dj_runner.ops.common.registry import get_op
from dj_runner.ops.common.unicode_tables import ISSPACE

REPO = Path(__file__).resolve().parents[3]

EDGE_CASES: list[str | None] = [
    None,
    "",
    "a",
    "abcdefghi",  # one short of a 10-gram
    "abcdefghij",  # exactly one 10-gram
    "a" * 1000,
    "ab" * 50_000,  # long: the table grows several times
    "中文也是一个字算一个长度" * 20,
    "😀🙂😀🙂😀🙂 emoji outside the BMP 😀🙂😀🙂",
    "e\u0301 e\u0301 e\u0301 combining marks e\u0301",
    "ΣΑΣ σας ΣΑΣ σας ΑΣ. ΑΣ, ΑΣ",  # final sigma, around punctuation
    "İstanbul İSTANBUL istanbul",  # 'İ'.lower() grows by one code point
    "tabs\tand\nnewlines\r\nand\u3000ideographic\u00a0spaces",
    "... !!! ,,, 123 456",  # only special characters: no words
    "  leading and trailing separators  \n\t",
    "Today is Sunday Sunday Sunday Sunday Sunday and it's a happy day!",
]


def thue_morse(n: int) -> str:
    """The string that breaks polynomial hashes modulo 2**64: exactness must not depend on it."""
    return "".join("ab"[bin(i).count("1") % 2] for i in range(n))


def corpus_texts(limit: int = 200) -> list[str | None]:
    with (REPO / "examples" / "data" / "demo.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line).get("text") for line in fh][:limit]


def random_texts(seed: int, count: int, extra: str = "") -> list[str]:
    rng = random.Random(seed)
    alphabet = [*"aab  \n\t.,!Σσς0", "İ", "中", "😀", "\u0301", "\u3000", "\r", "ab", "AB", *extra]
    return [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120))) for _ in range(count)
    ]


def test_extension_is_built() -> None:
    # The fallback keeps results right without a compiler, but CI must test the fast path.
    from dj_runner.ops import _kernels

    assert crf._native_char_rep_ratio is _kernels.char_rep_ratio
    assert wrf._count_word_ngrams is _kernels.word_rep_ratios
    assert native.kernels() is _kernels
    assert native.alnum_bitmap() is not None
    assert native.char_rep_ratios(pa.array(["abcabc"]), 3) is not None


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 13])
@pytest.mark.parametrize("source", ["edge", "corpus", "random", "thue_morse"], ids=lambda s: str(s))
def test_fast_paths_equal_the_definitions(source: str, n: int) -> None:
    texts = {
        "edge": EDGE_CASES,
        "corpus": corpus_texts(),
        "random": random_texts(seed=n, count=300),
        "thue_morse": [thue_morse(4096), thue_morse(1000) + "c" + thue_morse(1000)],
    }[source]
    arr = pa.array(texts, pa.string())
    want_char = [crf.char_rep_ratio(t or "", n) for t in texts]
    want_word = [wrf.word_rep_ratio(t or "", n) for t in texts]
    # Bit-identical floats, not approximately equal.
    assert crf.char_rep_ratios(arr, n).to_pylist() == want_char
    assert wrf.word_rep_ratios(arr, n).to_pylist() == want_word


def every_code_point() -> str:
    return "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


@pytest.mark.parametrize("source", ["edge", "corpus", "random", "every_code_point"])
def test_character_counts_equal_the_definitions(source: str) -> None:
    texts = {
        "edge": [t or "" for t in EDGE_CASES],
        "corpus": [t or "" for t in corpus_texts()],
        "random": random_texts(seed=3, count=300),
        # one character at a time: the C test must agree with str.isalnum on every code point
        "every_code_point": list(every_code_point()),
    }[source]
    arr = pa.array(texts, pa.string())
    alnum = native.count_in_set(arr, native.alnum_bitmap())
    assert alnum.to_pylist() == [anf.count_alnum(t) for t in texts]
    assert scf.count_specials(arr).to_pylist() == [scf.count_special(t) for t in texts]


def test_batch_honours_slices_and_empty_batches() -> None:
    texts = random_texts(seed=7, count=50)
    arr = pa.array(texts, pa.string())
    sliced = arr.slice(13, 20)
    assert wrf.word_rep_ratios(sliced, 2).to_pylist() == [
        wrf.word_rep_ratio(t, 2) for t in texts[13:33]
    ]
    assert crf.char_rep_ratios(sliced, 2).to_pylist() == [
        crf.char_rep_ratio(t, 2) for t in texts[13:33]
    ]
    assert wrf.word_rep_ratios(pa.array([], pa.string()), 3).to_pylist() == []
    assert crf.char_rep_ratios(pa.array([], pa.string()), 3).to_pylist() == []


def test_character_ratios_of_the_whole_array_honour_nulls_and_large_strings() -> None:
    texts = random_texts(seed=5, count=40)
    arr = pa.array(texts, pa.string())
    want = [crf.char_rep_ratio(t, 2) for t in texts]
    # A null slot may span bytes (Arrow does not require it empty): it counts as "".
    _, offsets, data = arr.buffers()
    validity = pa.array([i % 3 != 0 for i in range(len(texts))]).buffers()[1]
    with_nulls = pa.Array.from_buffers(pa.string(), len(texts), [validity, offsets, data])
    assert with_nulls.null_count > 0
    assert crf.char_rep_ratios(with_nulls, 2).to_pylist() == [
        0.0 if i % 3 == 0 else w for i, w in enumerate(want)
    ]
    # large_string: one text at a time through char_rep_ratio, the same floats.
    assert native.char_rep_ratios(arr.cast(pa.large_string()), 2) is None
    assert crf.char_rep_ratios(arr.cast(pa.large_string()), 2).to_pylist() == want


SIMPLE_CASING = [
    "Hello, World! hello world HELLO",
    "«Ça» va? «ça» va",  # Ç lower-cases: the general path
    "¡Hola! ¡hola! «hola» hola…",  # special code points beyond ASCII at both ends
    "😀smile😀 smile 😀 😀smile",
    "straße STRASSE strasse",  # ß is its own lower case
    "été ÉTÉ",
    "İstanbul istanbul",  # İ lower-cases to two code points
    "ΣΑΣ σας",  # Σ lower-cases by its context
    "中文 中文。 ·中文·",
    "e\u0301 E\u0301 e\u0301",
    "\u3000a\u3000 a \u00a0a\u00a0",  # not separators, but special at the ends
    "word\r\nword\x0bword\x0c word",
    "…",
    "",
]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_word_ratios_of_simple_casing_texts_in_c(n: int) -> None:
    """Texts that str.lower changes only in ASCII letters are done whole in C; the others are
    handed back, and the merged ratios are the definition's."""
    texts = [*SIMPLE_CASING, *random_texts(seed=20 + n, count=200, extra="éÉ«»¡…\u00a0Ç")]
    arr = pa.array(texts, pa.string())
    _, others = native.simple_word_rep_ratios(arr, n)
    assert others == [
        i for i, t in enumerate(texts) if any(not c.isascii() and c.lower() != c for c in t)
    ]
    assert 0 < len(others) < len(texts)
    assert wrf.word_rep_ratios(arr, n).to_pylist() == [wrf.word_rep_ratio(t, n) for t in texts]


def test_without_the_extension_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = corpus_texts(50)
    arr = pa.array(texts, pa.string())
    fast = (crf.char_rep_ratios(arr, 10).to_pylist(), wrf.word_rep_ratios(arr, 10).to_pylist())
    fast_filters = [
        get_op(name)().compute_stats(arr)
        for name in ("alphanumeric_filter", "special_characters_filter", "words_num_filter")
    ]
    fast_mappers = [
        get_op(name)().process(arr)
        for name in ("whitespace_normalization_mapper", "punctuation_normalization_mapper")
    ]
    monkeypatch.setattr(crf, "_native_char_rep_ratio", None)
    monkeypatch.setattr(wrf, "_count_word_ngrams", None)
    monkeypatch.setattr(native, "_native", None)
    slow = (crf.char_rep_ratios(arr, 10).to_pylist(), wrf.word_rep_ratios(arr, 10).to_pylist())
    assert fast == slow
    slow_filters = [
        get_op(name)().compute_stats(arr)
        for name in ("alphanumeric_filter", "special_characters_filter", "words_num_filter")
    ]
    slow_mappers = [
        get_op(name)().process(arr)
        for name in ("whitespace_normalization_mapper", "punctuation_normalization_mapper")
    ]
    assert fast_filters == slow_filters
    assert fast_mappers == slow_mappers


WHOLE_ARRAY_OPS = (
    "whitespace_normalization_mapper",
    "punctuation_normalization_mapper",
    "words_num_filter",
    "alphanumeric_filter",
    "special_characters_filter",
    "maximum_line_length_filter",
    "average_line_length_filter",
)

LINE_BREAKS = [
    "\n",
    "\r",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
]


def _run(name: str, arr: pa.Array) -> object:
    op = get_op(name)()
    return op.process(arr) if hasattr(op, "process") else op.compute_stats(arr)


@pytest.mark.parametrize("name", WHOLE_ARRAY_OPS)
@pytest.mark.parametrize("source", ["edge", "random", "spaces", "lines"])
def test_whole_array_kernels_equal_the_arrow_paths(
    name: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nulls, slices, every str.isspace and table character at the ends and in the middle."""
    spaces = [chr(c) for lo, hi in ISSPACE for c in range(lo, hi + 1)]
    table = list(get_op("punctuation_normalization_mapper")().PUNCTUATION_UNICODE)
    texts = {
        "edge": EDGE_CASES,
        "random": [*random_texts(seed=11, count=200), None],
        "spaces": [
            f"{a}{b}x{a}{b}y{b}{a}"
            for a in [*spaces, "\u200b", "\u0084", "\ufffc"]
            for b in [*spaces[:4], *table[:6], ""]
        ],
        # every pair of breaks before, between and after lines of 0 to 3 code points
        "lines": [
            f"{a}{'é' * k}{b}x😀{b}{a}"[: 3 + k]
            for a in [*LINE_BREAKS, "", "\r\r\n", "\n\r"]
            for b in [*LINE_BREAKS, "", "\u2027", "\x1f"]
            for k in range(4)
        ],
    }[source]
    arr = pa.array(texts, pa.string())
    fast = [_run(name, a) for a in (arr, arr.slice(3, len(arr) - 5), arr.slice(0, 0))]
    monkeypatch.setattr(native, "_native", None)
    slow = [_run(name, a) for a in (arr, arr.slice(3, len(arr) - 5), arr.slice(0, 0))]
    assert fast == slow


@pytest.mark.parametrize(
    "name", [*WHOLE_ARRAY_OPS, "character_repetition_filter", "word_repetition_filter"]
)
def test_chunked_and_bufferless_empty_arrays(name: str) -> None:
    """Ops take a chunked column, and an empty array whose offsets buffer is empty (valid
    Arrow)."""
    texts = random_texts(seed=31, count=30)
    whole = _run(name, pa.array(texts, pa.string()))
    assert _run(name, pa.chunked_array([texts[:11], texts[11:]], pa.string())) == whole
    empty = pa.Array.from_buffers(pa.string(), 0, [None, pa.py_buffer(b""), pa.py_buffer(b"")])
    empty.validate(full=True)
    assert _run(name, empty) == _run(name, pa.array([], pa.string()))


def test_a_malformed_sequence_beyond_the_last_code_point_reads_as_u_fffd() -> None:
    """Arrow's strings are valid UTF-8, but a kernel given bytes that are not must not index a
    bitmap past its 0x110000 bits: F7 BF BF BF (0x1FFFFF) decodes as U+FFFD."""
    from dj_runner.ops import _kernels

    offsets = pa.array([0, 4], pa.int32()).buffers()[1]
    counts = _kernels.count_in_set(offsets, b"\xf7\xbf\xbf\xbf", native.code_point_bitmap([0xFFFD]))
    assert counts == pa.array([1], pa.int64()).buffers()[1].to_pybytes()


def test_bad_arguments_are_refused() -> None:
    from dj_runner.ops import _kernels

    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        _kernels.char_rep_ratio("abc", 0)
    with pytest.raises(TypeError, match="text must be str"):
        _kernels.char_rep_ratio(b"abc", 2)
    offsets = pa.array([0, 3], pa.int32()).buffers()[1]
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        _kernels.char_rep_ratios(offsets, b"abc", 0)
    with pytest.raises(ValueError, match="out of the data"):
        _kernels.char_rep_ratios(offsets, b"ab", 2)
    assert _kernels.char_rep_ratios(offsets, b"aaa", 1) == pa.array([1.0]).buffers()[1].to_pybytes()
    with pytest.raises(ValueError, match="bitmap must be"):
        _kernels.count_in_set(memoryview(b"\0" * 4), b"", b"")
    with pytest.raises(ValueError, match="out of the data"):
        _kernels.count_words(pa.array([0, 5], pa.int32()).buffers()[1], b"abc", bytes(0x22000))
    ids = pa.array([0, 1, 0, 1], pa.int32()).buffers()[1]
    with pytest.raises(ValueError, match="out of"):
        _kernels.word_rep_ratios(ids, pa.array([0, 5], pa.int64()).buffers()[1], 2)
    with pytest.raises(ValueError, match="int32"):
        _kernels.word_rep_ratios(b"abc", pa.array([0, 0], pa.int64()).buffers()[1], 2)
    assert _kernels.word_rep_ratios(ids, pa.array([0, 4], pa.int64()).buffers()[1], 2) == [2 / 3]
