"""Shared text helpers for the ops: Data-Juicer's character sets, word and line splitting.

Everything here is a fact about Data-Juicer 1.6.1 (``data_juicer/ops/common``) or about the
``regex`` module it uses, restated so that the ops can work on whole Arrow arrays:

* ``SPECIAL_CHARACTERS``: ``string.punctuation + string.digits + string.whitespace``, the
  "other" special characters, and every single-code-point key of ``emoji.EMOJI_DATA`` from
  emoji 2.2.0 (the version Data-Juicer pins). Multi-code-point emoji keys never match a single
  character in Data-Juicer either, so only single code points are kept.
* ``VARIOUS_WHITESPACES``: the set that ``whitespace_normalization_mapper`` maps to ``' '``.
* Classes of the ``regex`` module's Unicode-aware ``\\w``, ``\\d`` and ``\\s``, written out as
  RE2 character classes so that Arrow's regex kernels (RE2, ASCII-only shorthand classes) match
  exactly what Data-Juicer's patterns match. ``\\w`` and ``\\d`` are derived from this Python's
  Unicode database; code points newer than it are not covered.

This module is not an op: the registry does not import it as one.
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.common.params import unwrap_raw_pattern

# Code points added to SPECIAL_CHARACTERS besides string.punctuation/digits/whitespace:
# Data-Juicer's OTHER_SPECIAL_CHARACTERS and the single-code-point emoji of emoji 2.2.0.
_OTHER_SPECIAL_RANGES: tuple[tuple[int, int], ...] = (
    (0x0081, 0x0085),
    (0x0091, 0x0093),
    (0x0095, 0x0099),
    (0x009C, 0x009D),
    (0x00A1, 0x00AB),
    (0x00AD, 0x00B4),
    (0x00B7, 0x00BF),
    (0x00D7, 0x00D7),
    (0x00F7, 0x00F8),
    (0x0131, 0x0131),
    (0x026A, 0x026A),
    (0x02BA, 0x02BC),
    (0x02C8, 0x02C8),
    (0x02CC, 0x02CC),
    (0x02D0, 0x02D0),
    (0x02D8, 0x02D8),
    (0x02DA, 0x02DA),
    (0x02DC, 0x02DC),
    (0x03C0, 0x03C0),
    (0x0413, 0x0413),
    (0x060C, 0x060C),
    (0x0647, 0x0647),
    (0x066A, 0x066A),
    (0x066C, 0x066C),
    (0x06E9, 0x06E9),
    (0x093E, 0x093E),
    (0x0940, 0x0940),
    (0x0947, 0x0947),
    (0x094D, 0x094D),
    (0x097D, 0x097D),
    (0x09BE, 0x09BE),
    (0x0E51, 0x0E51),
    (0x2002, 0x2003),
    (0x2005, 0x2005),
    (0x2008, 0x200B),
    (0x2010, 0x2011),
    (0x2013, 0x2016),
    (0x2018, 0x201A),
    (0x201C, 0x2020),
    (0x2022, 0x2022),
    (0x2024, 0x2024),
    (0x2026, 0x2026),
    (0x202F, 0x2030),
    (0x2032, 0x2033),
    (0x2039, 0x203A),
    (0x203C, 0x203C),
    (0x203F, 0x203F),
    (0x2043, 0x2044),
    (0x2049, 0x2049),
    (0x20A8, 0x20A8),
    (0x20AA, 0x20AA),
    (0x20AC, 0x20AC),
    (0x2103, 0x2103),
    (0x2122, 0x2122),
    (0x2139, 0x2139),
    (0x2190, 0x2199),
    (0x21A9, 0x21AA),
    (0x21D3, 0x21D3),
    (0x2206, 0x2206),
    (0x2208, 0x2208),
    (0x2212, 0x2212),
    (0x221A, 0x221A),
    (0x221E, 0x221F),
    (0x223C, 0x223C),
    (0x2248, 0x2248),
    (0x2256, 0x2256),
    (0x2264, 0x2265),
    (0x2295, 0x2295),
    (0x22C5, 0x22C5),
    (0x231A, 0x231B),
    (0x2328, 0x2328),
    (0x23CF, 0x23CF),
    (0x23E9, 0x23F3),
    (0x23F8, 0x23FA),
    (0x24C2, 0x24C2),
    (0x2550, 0x2550),
    (0x25A0, 0x25A0),
    (0x25AA, 0x25AC),
    (0x25B2, 0x25B2),
    (0x25B4, 0x25B4),
    (0x25B6, 0x25B7),
    (0x25BA, 0x25BC),
    (0x25C0, 0x25C0),
    (0x25C6, 0x25C6),
    (0x25CF, 0x25CF),
    (0x25E6, 0x25E6),
    (0x25FB, 0x25FE),
    (0x2600, 0x2606),
    (0x260E, 0x260E),
    (0x2611, 0x2611),
    (0x2614, 0x2615),
    (0x2618, 0x2618),
    (0x261B, 0x261B),
    (0x261D, 0x261D),
    (0x2620, 0x2620),
    (0x2622, 0x2623),
    (0x2626, 0x2626),
    (0x262A, 0x262A),
    (0x262E, 0x262F),
    (0x2638, 0x263B),
    (0x2640, 0x2640),
    (0x2642, 0x2642),
    (0x2648, 0x2653),
    (0x265F, 0x2661),
    (0x2663, 0x2663),
    (0x2665, 0x2666),
    (0x2668, 0x2668),
    (0x266B, 0x266B),
    (0x267B, 0x267B),
    (0x267E, 0x267F),
    (0x2692, 0x2697),
    (0x2699, 0x2699),
    (0x269B, 0x269C),
    (0x26A0, 0x26A1),
    (0x26A7, 0x26A7),
    (0x26AA, 0x26AB),
    (0x26B0, 0x26B1),
    (0x26BD, 0x26BE),
    (0x26C4, 0x26C5),
    (0x26C8, 0x26C8),
    (0x26CE, 0x26CF),
    (0x26D1, 0x26D1),
    (0x26D3, 0x26D4),
    (0x26E9, 0x26EA),
    (0x26F0, 0x26F5),
    (0x26F7, 0x26FA),
    (0x26FD, 0x26FD),
    (0x2702, 0x2702),
    (0x2705, 0x2705),
    (0x2708, 0x270D),
    (0x270F, 0x270F),
    (0x2712, 0x2714),
    (0x2716, 0x2716),
    (0x271D, 0x271D),
    (0x2721, 0x2721),
    (0x2726, 0x2726),
    (0x2728, 0x2728),
    (0x2731, 0x2731),
    (0x2733, 0x2734),
    (0x2744, 0x2744),
    (0x2747, 0x2747),
    (0x274C, 0x274C),
    (0x274E, 0x274E),
    (0x2753, 0x2757),
    (0x2763, 0x2764),
    (0x2795, 0x2797),
    (0x27A1, 0x27A1),
    (0x27A4, 0x27A4),
    (0x27A9, 0x27A9),
    (0x27B0, 0x27B0),
    (0x27BF, 0x27BF),
    (0x2800, 0x2800),
    (0x2934, 0x2935),
    (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50),
    (0x2B55, 0x2B55),
    (0x3000, 0x3002),
    (0x300A, 0x300D),
    (0x3010, 0x3011),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x309C, 0x309C),
    (0x30B7, 0x30B7),
    (0x30C3, 0x30C4),
    (0x30F3, 0x30F3),
    (0x30FB, 0x30FC),
    (0x3297, 0x3297),
    (0x3299, 0x3299),
    (0x4E00, 0x4E00),
    (0x4E0A, 0x4E0A),
    (0x58EB, 0x58EB),
    (0xFD3E, 0xFD3F),
    (0xFEFF, 0xFEFF),
    (0xFF01, 0xFF01),
    (0xFF08, 0xFF09),
    (0xFF0C, 0xFF0C),
    (0xFF0E, 0xFF0E),
    (0xFF11, 0xFF11),
    (0xFF1A, 0xFF1B),
    (0xFF1F, 0xFF1F),
    (0xFF3E, 0xFF3E),
    (0xFF5E, 0xFF5E),
    (0xFFFC, 0xFFFD),
    (0x1F004, 0x1F004),
    (0x1F0CF, 0x1F0CF),
    (0x1F170, 0x1F171),
    (0x1F17E, 0x1F17F),
    (0x1F18E, 0x1F18E),
    (0x1F191, 0x1F19A),
    (0x1F201, 0x1F202),
    (0x1F21A, 0x1F21A),
    (0x1F22F, 0x1F22F),
    (0x1F232, 0x1F23A),
    (0x1F250, 0x1F251),
    (0x1F300, 0x1F321),
    (0x1F324, 0x1F393),
    (0x1F396, 0x1F397),
    (0x1F399, 0x1F39B),
    (0x1F39E, 0x1F3F0),
    (0x1F3F3, 0x1F3F5),
    (0x1F3F7, 0x1F4FD),
    (0x1F4FF, 0x1F53D),
    (0x1F549, 0x1F54E),
    (0x1F550, 0x1F567),
    (0x1F56F, 0x1F570),
    (0x1F573, 0x1F57A),
    (0x1F587, 0x1F587),
    (0x1F58A, 0x1F58D),
    (0x1F590, 0x1F590),
    (0x1F595, 0x1F596),
    (0x1F5A4, 0x1F5A5),
    (0x1F5A8, 0x1F5A8),
    (0x1F5B1, 0x1F5B2),
    (0x1F5BC, 0x1F5BC),
    (0x1F5C2, 0x1F5C4),
    (0x1F5D1, 0x1F5D3),
    (0x1F5DC, 0x1F5DE),
    (0x1F5E1, 0x1F5E1),
    (0x1F5E3, 0x1F5E3),
    (0x1F5E8, 0x1F5E8),
    (0x1F5EF, 0x1F5EF),
    (0x1F5F3, 0x1F5F3),
    (0x1F5FA, 0x1F64F),
    (0x1F680, 0x1F6C5),
    (0x1F6CB, 0x1F6D2),
    (0x1F6D5, 0x1F6D7),
    (0x1F6DC, 0x1F6E5),
    (0x1F6E9, 0x1F6E9),
    (0x1F6EB, 0x1F6EC),
    (0x1F6F0, 0x1F6F0),
    (0x1F6F3, 0x1F6FC),
    (0x1F7E0, 0x1F7EB),
    (0x1F7F0, 0x1F7F0),
    (0x1F90C, 0x1F93A),
    (0x1F93C, 0x1F945),
    (0x1F947, 0x1F9FF),
    (0x1FA70, 0x1FA7C),
    (0x1FA80, 0x1FA88),
    (0x1FA90, 0x1FABD),
    (0x1FABF, 0x1FAC5),
    (0x1FACE, 0x1FADB),
    (0x1FAE0, 0x1FAE8),
    (0x1FAF0, 0x1FAF8),
)

SPECIAL_CHARACTERS: frozenset[str] = frozenset(
    string.punctuation + string.digits + string.whitespace
) | frozenset(chr(c) for lo, hi in _OTHER_SPECIAL_RANGES for c in range(lo, hi + 1))
"""Data-Juicer's ``SPECIAL_CHARACTERS`` (single characters only)."""

SPECIAL_CHARACTERS_STR: str = "".join(sorted(SPECIAL_CHARACTERS))
"""The same set as a string, for ``str.strip``."""

VARIOUS_WHITESPACES: frozenset[str] = frozenset(
    chr(c)
    for c in (
        0x09, 0x20, 0x84, 0xA0, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007,
        0x2008, 0x2009, 0x200A, 0x200B, 0x200C, 0x200D, 0x202F, 0x205F, 0x2060, 0x3000, 0xFFFC,
    )
)  # fmt: skip
"""Data-Juicer's ``VARIOUS_WHITESPACES`` (note: U+0084, not U+0085; no newline)."""

REGEX_WHITE_SPACE: frozenset[str] = frozenset(
    chr(c)
    for c in (
        0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
        0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F,
        0x3000,
    )
)  # fmt: skip
"""What ``\\s`` matches in the ``regex`` module: the Unicode White_Space property."""

# Code points that the regex module's \w matches besides the categories L, Nl, M, Nd, Pc and
# Join_Control: the Other_Alphabetic symbols (circled and squared Latin letters).
_WORD_EXTRA_RANGES: tuple[tuple[int, int], ...] = (
    (0x200C, 0x200D), (0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169),
    (0x1F170, 0x1F189),
)  # fmt: skip
_WORD_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Mn", "Mc", "Me", "Nd", "Pc"})

# str.splitlines() line boundaries; "\r\n" counts as one.
LINE_BREAK_CHARS: str = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def to_ranges(code_points: Iterable[int]) -> list[tuple[int, int]]:
    """Collapse code points into sorted, inclusive ``(lo, hi)`` ranges."""
    out: list[tuple[int, int]] = []
    for c in sorted(set(code_points)):
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def re2_class(ranges: Iterable[tuple[int, int]], negate: bool = False) -> str:
    """An RE2 character class (``[...]``) of the given inclusive code point ranges."""
    parts = []
    for lo, hi in ranges:
        parts.append(f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}")
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def chars_class(chars: Iterable[str], negate: bool = False) -> str:
    """An RE2 character class of the given single characters."""
    return re2_class(to_ranges(ord(c) for c in chars), negate=negate)


def _scan(pred: Callable[[str], bool]) -> list[tuple[int, int]]:
    return to_ranges(
        c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF and pred(chr(c))
    )


def scan_word_ranges() -> list[tuple[int, int]]:
    """``word_ranges`` computed from this Python's Unicode database."""
    cats = _scan(lambda ch: unicodedata.category(ch) in _WORD_CATEGORIES)
    extra = [c for lo, hi in _WORD_EXTRA_RANGES for c in range(lo, hi + 1)]
    return to_ranges([c for lo, hi in cats for c in range(lo, hi + 1)] + extra)


def scan_decimal_ranges() -> list[tuple[int, int]]:
    """``decimal_ranges`` computed from this Python's Unicode database."""
    return _scan(lambda ch: unicodedata.category(ch) == "Nd")


def scan_isspace_ranges() -> list[tuple[int, int]]:
    """``isspace_ranges`` computed from this Python's Unicode database."""
    return _scan(str.isspace)


def _tables() -> Any:
    """The precomputed tables, when they were made from this Python's Unicode version."""
    from dj_runner.ops.common import unicode_tables

    return unicode_tables if unicodedata.unidata_version == unicode_tables.UNIDATA_VERSION else None


# Scanning all 1.1 million code points costs each Ray worker about 0.4 s at start-up, so the
# ranges are precomputed in unicode_tables.py and scanned only on another Unicode version.
@cache
def word_ranges() -> list[tuple[int, int]]:
    """The ``regex`` module's ``\\w`` (Alphabetic, Mark, Nd, Pc, Join_Control)."""
    t = _tables()
    return list(t.WORD) if t else scan_word_ranges()


@cache
def decimal_ranges() -> list[tuple[int, int]]:
    """The ``regex`` module's ``\\d``: general category Nd."""
    t = _tables()
    return list(t.DECIMAL) if t else scan_decimal_ranges()


@cache
def isspace_ranges() -> list[tuple[int, int]]:
    """The characters that ``str.strip()`` (no argument) removes: ``str.isspace``."""
    t = _tables()
    return list(t.ISSPACE) if t else scan_isspace_ranges()


def render_unicode_tables() -> str:
    """The source of ``unicode_tables.py`` for this Python's Unicode database."""

    def rows(ranges: list[tuple[int, int]]) -> str:
        items = [f"(0x{lo:X}, 0x{hi:X})," for lo, hi in ranges]
        lines, line = [], "   "
        for item in items:
            if len(line) + 1 + len(item) > 99:
                lines.append(line)
                line = "   "
            line += " " + item
        lines.append(line)
        return "\n".join(lines)

    return (
        '"""Code point ranges of the Unicode properties the ops need, precomputed.\n\n'
        "Generated by ``python -m dj_runner.ops.common.textutil`` from Python's Unicode database; used\n"
        "only when ``UNIDATA_VERSION`` is the running Python's (otherwise textutil scans).\n"
        '"""\n\n'
        f'UNIDATA_VERSION = "{unicodedata.unidata_version}"\n\n'
        f"WORD = (\n{rows(scan_word_ranges())}\n)  # fmt: skip\n\n"
        f"DECIMAL = (\n{rows(scan_decimal_ranges())}\n)  # fmt: skip\n\n"
        f"ISSPACE = (\n{rows(scan_isspace_ranges())}\n)  # fmt: skip\n"
    )


@cache
def special_class(negate: bool = False) -> str:
    """RE2 class of ``SPECIAL_CHARACTERS`` (or of its complement)."""
    return chars_class(SPECIAL_CHARACTERS, negate=negate)


def as_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (ops accept a chunked column too)."""
    if isinstance(texts, pa.ChunkedArray):
        return texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    return texts


def non_null(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The text array with nulls replaced by ``""`` (filters see null as empty text)."""
    return pc.fill_null(as_array(texts), "")


def safe_ratio(num: pa.Array, den: pa.Array) -> pa.Array:
    """``num / den`` as float64, and 0.0 where ``den`` is 0 (Data-Juicer's convention)."""
    num_f = pc.cast(num, pa.float64())
    den_f = pc.cast(den, pa.float64())
    zero = pc.equal(den_f, 0.0)
    return pc.if_else(zero, 0.0, pc.divide(num_f, pc.if_else(zero, 1.0, den_f)))


def split_words(text: str) -> list[str]:
    """Data-Juicer's ``get_words_from_document`` without a tokenizer.

    Splits on ``' '``, ``'\\n'`` and ``'\\t'`` only (not on other whitespace) and drops empty
    pieces.
    """
    return [w for w in text.replace("\n", " ").replace("\t", " ").split(" ") if w]


def refine_words(words: list[str], lower_case: bool) -> list[str]:
    """Data-Juicer's ``words_refinement(words, lower_case, strip_chars=SPECIAL_CHARACTERS)``.

    Lower-cases first (Python ``str.lower``), then strips special characters from both ends of
    each word and drops the words left empty.
    """
    if lower_case:
        words = [w.lower() for w in words]
    stripped = (w.strip(SPECIAL_CHARACTERS_STR) for w in words)
    return [w for w in stripped if w]


#: ``list_segment_max`` packs (list index, value) into one int64: the value takes the low bits.
_SEGMENT_VALUE_BITS = 32


def list_segment_max(lists: pa.ListArray, values: pa.Array) -> pa.Array:
    """Per-list maximum of non-negative ``values`` (aligned with ``lists.flatten()``), as int64.

    Every list must be non-empty (as the result of ``split_pattern`` always is). One pass of
    Arrow compute, no hash aggregation (which would import Acero, tens of ms on every start):
    the key ``list index << 32 | value`` grows from list to list, so its running maximum at a
    list's last element is that list's index and maximum value.
    """
    lengths = pc.list_value_length(lists)
    if len(lists) and (lengths.null_count or pc.min(lengths).as_py() == 0):
        raise ValueError("list_segment_max needs non-empty lists")
    v = pc.cast(values, pa.int64())
    top = pc.max(v).as_py() if len(v) else 0
    low = pc.min(v).as_py() if len(v) else 0
    if low < 0 or top >= 1 << _SEGMENT_VALUE_BITS or len(lists) >= 1 << 30:
        raise ValueError("list_segment_max needs values in [0, 2**32) and under 2**30 lists")
    parents = pc.cast(pc.list_parent_indices(lists), pa.int64())
    keys = pc.bit_wise_or(pc.shift_left(parents, _SEGMENT_VALUE_BITS), v)
    ends = pc.subtract(pc.cumulative_sum(pc.cast(lengths, pa.int64())), 1)
    last = pc.take(pc.cumulative_max(keys), ends)
    out = pc.bit_wise_and(last, (1 << _SEGMENT_VALUE_BITS) - 1)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def regex_sub_per_sample(texts: pa.Array | pa.ChunkedArray, pattern: str, repl: str) -> pa.Array:
    """``re.sub(pattern, repl, text, flags=re.DOTALL)`` on every non-null sample.

    The fallback for user patterns and replacement templates: Python's ``re`` is the closest
    engine at hand to the ``regex`` module Data-Juicer uses.
    """
    arr = as_array(texts)
    compiled = re.compile(pattern, flags=re.DOTALL)
    out = [None if t is None else compiled.sub(repl, t) for t in arr.to_pylist()]
    return pa.array(out, type=arr.type)


def regex_sub_vectorised(
    texts: pa.Array | pa.ChunkedArray, re2_pattern: str, repl: str
) -> pa.Array:
    """Replace every match of an RE2 pattern by the literal ``repl`` (no backslash in it)."""
    if "\\" in repl:
        raise ValueError("regex_sub_vectorised takes a literal replacement")
    return pc.replace_substring_regex(as_array(texts), pattern=re2_pattern, replacement=repl)


def py_class_body(ranges: Iterable[tuple[int, int]]) -> str:
    """The inside of a Python ``re`` character class for the given code point ranges."""
    parts = []
    for lo, hi in ranges:
        parts.append(f"\\U{lo:08X}" if lo == hi else f"\\U{lo:08X}-\\U{hi:08X}")
    return "".join(parts)


def re2_class_body(ranges: Iterable[tuple[int, int]]) -> str:
    """The inside of an RE2 character class for the given code point ranges."""
    return re2_class(ranges)[1:-1]


def clean_with_pattern(
    texts: pa.Array | pa.ChunkedArray,
    pattern: str | None,
    repl: str,
    default_re2: Callable[[], str],
    default_py: Callable[[], str],
    re2_repl_prefix: str = "",
) -> pa.Array:
    """The shared engine of the ``clean_*_mapper`` ops.

    ``pattern is None`` selects the op's default pattern: with a literal ``repl`` it runs
    vectorised as an exact RE2 translation (``default_re2``, whose replacement is
    ``re2_repl_prefix + repl``); with a replacement template (a backslash in ``repl``) it runs
    per sample with an exact Python ``re`` translation (``default_py``). A user pattern runs per
    sample with Python's ``re``, as written.
    """
    if pattern is None:
        if "\\" not in repl:
            return pc.replace_substring_regex(
                as_array(texts), pattern=default_re2(), replacement=re2_repl_prefix + repl
            )
        return regex_sub_per_sample(texts, default_py(), repl)
    return regex_sub_per_sample(texts, unwrap_raw_pattern(pattern), repl)


TOKENIZATION_UNSUPPORTED = (
    "tokenization=True needs a tokenizer model download, which this runner does not do; "
    "use tokenization=False"
)


if __name__ == "__main__":
    (Path(__file__).with_name("unicode_tables.py")).write_text(render_unicode_tables())
