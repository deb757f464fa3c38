"""textutil: Data-Juicer's character sets and the regex-module classes spelled out."""

from __future__ import annotations

import string
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.common import textutil


def test_special_characters_set() -> None:
    s = textutil.SPECIAL_CHARACTERS
    assert len(s) == 1618
    assert set(string.punctuation + string.digits + string.whitespace) <= s
    for ch in "一士上ン。，Г😀👍\u00ad\u200b\ufeff\u2028"[:-1]:
        assert ch in s, hex(ord(ch))
    for ch in "aZ中é\u00a0\u2028\u200c\u00e9":
        assert ch not in s, hex(ord(ch))
    assert all(len(c) == 1 for c in s)


def test_various_whitespaces() -> None:
    w = textutil.VARIOUS_WHITESPACES
    assert len(w) == 23
    assert "\x84" in w and "\x85" not in w and "\n" not in w and "\t" in w


def test_word_class_matches_regex_module_definition() -> None:
    cls = textutil.re2_class(textutil.word_ranges())
    chars = [
        "a",
        "_",
        "é",
        "\u093e",
        "\u0663",
        "\u203f",
        "\u200c",
        "Ⓐ",
        "Ⅻ",
        " ",
        "-",
        "²",
        "\u00a0",
    ]
    got = pc.match_substring_regex(pa.array(chars), pattern=f"^{cls}$").to_pylist()
    assert got == [True] * 9 + [False] * 4


def test_decimal_class_is_category_nd() -> None:
    digits = {chr(c) for lo, hi in textutil.decimal_ranges() for c in range(lo, hi + 1)}
    assert all(unicodedata.category(d) == "Nd" for d in digits)
    assert {"0", "9", "\u0663", "\uff11"} <= digits
    assert "²" not in digits and "①" not in digits


def test_split_and_refine_words() -> None:
    words = textutil.split_words("A  b\nC\td\re\u00a0f ")
    assert words == ["A", "b", "C", "d\re\u00a0f"]
    assert textutil.refine_words(["...Ok!", "!!", "Σ"], lower_case=True) == ["ok", "σ"]
    assert textutil.refine_words(["Г", "г"], lower_case=False) == ["г"]
    assert textutil.refine_words(["Г"], lower_case=True) == ["г"]


def test_safe_ratio() -> None:
    out = textutil.safe_ratio(pa.array([1, 0, 3]), pa.array([2, 0, 3]))
    assert out.to_pylist() == [0.5, 0.0, 1.0]
    assert out.type == pa.float64()


def test_unwrap_raw_pattern() -> None:
    assert textutil.unwrap_raw_pattern("r'\\d+'") == "\\d+"
    assert textutil.unwrap_raw_pattern('r"x"') == "x"
    assert textutil.unwrap_raw_pattern("r''") == ""
    assert textutil.unwrap_raw_pattern("r'") == "r'"
    assert textutil.unwrap_raw_pattern("abc") == "abc"


def test_precomputed_unicode_tables_match_this_python() -> None:
    # The tables spare each Ray worker a scan of every code point; they must be that scan.
    from dj_runner.ops.common import unicode_tables

    assert unicodedata.unidata_version == unicode_tables.UNIDATA_VERSION
    assert textutil.word_ranges() == textutil.scan_word_ranges()
    assert textutil.decimal_ranges() == textutil.scan_decimal_ranges()
    assert textutil.isspace_ranges() == textutil.scan_isspace_ranges()
    source = Path(unicode_tables.__file__).read_text(encoding="utf-8")
    assert source == textutil.render_unicode_tables()
