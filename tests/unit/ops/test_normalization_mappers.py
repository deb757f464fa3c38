"""whitespace_normalization, punctuation_normalization, remove_specific_chars, fix_unicode."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dj_runner.ops.common.registry import get_op


def run(name: str, texts: list[str | None], **params: object) -> list[str | None]:
    return get_op(name)(**params).process(pa.array(texts, pa.string())).to_pylist()


class TestWhitespaceNormalization:
    def test_strips_and_maps_unusual_spaces(self) -> None:
        # NBSP, en quad, zero-width space, ideographic space, tab inside -> ' '
        text = "\u00a0 x\u00a0y\u2000z\u200bw\u3000v\tu \u2028"
        assert run("whitespace_normalization_mapper", [text]) == ["x y z w v u"]

    def test_keeps_newlines_and_carriage_returns_inside(self) -> None:
        assert run("whitespace_normalization_mapper", ["a\nb\r\nc"]) == ["a\nb\r\nc"]

    def test_strip_uses_str_isspace(self) -> None:
        # U+001F and U+0085 are str.isspace (stripped at the ends) but not in VARIOUS_WHITESPACES;
        # U+200B is in VARIOUS_WHITESPACES but not str.isspace: at the ends it becomes ' '.
        text = "\x1f\x85\u200bab\u0085c\u200b\x1c"
        assert run("whitespace_normalization_mapper", [text]) == [" ab\x85c "]

    def test_u0084_is_mapped_but_u0085_is_not(self) -> None:
        assert run("whitespace_normalization_mapper", ["a\x84b\x85c"]) == ["a b\x85c"]

    def test_empty_null_and_only_spaces(self) -> None:
        assert run("whitespace_normalization_mapper", ["", None, " \t\n "]) == ["", None, ""]


class TestPunctuationNormalization:
    def test_data_juicer_table(self) -> None:
        text = "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"
        expected = ',.,""""""""""\'::?!();- - . ~\'...-<>[]%-'
        assert run("punctuation_normalization_mapper", [text]) == [expected]

    def test_other_text_unchanged(self) -> None:
        text = "Hello, 世界! ‘quoted’ 2"  # left single quote is not in the table
        assert run("punctuation_normalization_mapper", [text, None, ""]) == [
            "Hello, 世界! ‘quoted' 2",
            None,
            "",
        ]


class TestRemoveSpecificChars:
    def test_default_chars(self) -> None:
        text = "◆●■►▼▲▴∆▻▷❖♡□ok|"
        assert run("remove_specific_chars_mapper", [text, None]) == ["ok|", None]

    def test_list_and_regex_metacharacters_are_literal(self) -> None:
        # Data-Juicer 1.6.1 escapes every character; '|' is no longer removed implicitly.
        out = run("remove_specific_chars_mapper", ["a-b]c^d\\e|f"], chars_to_remove=["]-", "^\\"])
        assert out == ["abcde|f"]

    def test_empty_removes_nothing(self) -> None:
        assert run("remove_specific_chars_mapper", ["◆x"], chars_to_remove="") == ["◆x"]

    def test_rejects_non_strings(self) -> None:
        with pytest.raises(ValueError):
            get_op("remove_specific_chars_mapper")(chars_to_remove=[1, 2])


class TestFixUnicode:
    def test_fixes_mojibake(self) -> None:
        assert run("fix_unicode_mapper", ["âœ” No problems", None]) == ["✔ No problems", None]

    def test_normalization_forms(self) -> None:
        decomposed = "e\u0301"
        assert run("fix_unicode_mapper", [decomposed]) == ["\u00e9"]
        assert run("fix_unicode_mapper", ["\u00e9"], normalization="nfd") == [decomposed]
        assert run("fix_unicode_mapper", ["①"], normalization="NFKC") == ["1"]
        assert run("fix_unicode_mapper", ["①"], normalization=None) == ["①"]

    def test_rejects_unknown_form(self) -> None:
        with pytest.raises(ValueError, match="not supported"):
            get_op("fix_unicode_mapper")(normalization="NFX")

    def test_keeps_large_string_type(self) -> None:
        out = get_op("fix_unicode_mapper")().process(pa.array(["x"], pa.large_string()))
        assert out.type == pa.large_string()
