"""clean_email_mapper, clean_links_mapper, clean_ip_mapper: Data-Juicer's default patterns."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from dj_runner.ops.clean_links_mapper import py_pattern
from dj_runner.ops.common.registry import get_op


def run(name: str, texts: list[str | None], **params: object) -> list[str | None]:
    return get_op(name)(**params).process(pa.array(texts, pa.string())).to_pylist()


class TestCleanEmail:
    def test_data_juicer_cases(self) -> None:
        texts = [
            "happy day euqdh@cjqi.com",
            "请问你是谁dasoidhao@1264fg.45om",
            "ftp://examplema-nièrdash@hqbchd.ckdhnfes.cds",
            "👊23da44sh12@46hqb12chd.ckdhnfes.comd.dasd.asd.dc",
            "no mail here",
            None,
        ]
        assert run("clean_email_mapper", texts) == [
            "happy day ",
            "请问你是谁dasoidhao@1264fg.45om",
            "ftp://examplema-niè",
            "👊",
            "no mail here",
            None,
        ]

    def test_domain_must_be_lower_case(self) -> None:
        assert run("clean_email_mapper", ["Mail: A.B@EXAMPLE.COM"]) == ["Mail: A.B@EXAMPLE.COM"]

    def test_repl_and_custom_pattern(self) -> None:
        assert run("clean_email_mapper", ["x a@b.cd y"], repl="<EMAIL>") == ["x <EMAIL> y"]
        assert run("clean_email_mapper", ["x a@b.cd y"], repl=r"[\g<0>]") == ["x [a@b.cd] y"]
        # Data-Juicer unwraps a literal r'...' around a recipe pattern.
        assert run("clean_email_mapper", ["id: 42, 7"], pattern="r'\\d+'", repl="N") == ["id: N, N"]


class TestCleanIp:
    def test_ipv4_and_ipv6(self) -> None:
        texts = [
            "test of ip 234.128.124.123",
            "34.0.124.123",
            "ftp://example.com/188.46.244.216my-page.html",
            "ft174.1421.237.246my",
            "FE80:0000:0000:0000:0202:B3FF:FE1E:8329 and 1.2.3",
            "\u00a0256.1.1.1",
        ]
        assert run("clean_ip_mapper", texts) == [
            "test of ip ",
            "",
            "ftp://example.com/my-page.html",
            "ft174.1421.237.246my",
            " and 1.2.3",
            "\u00a02",  # "256." is no octet, so the match starts at "56."
        ]

    def test_ipv6_digits_are_unicode_decimal(self) -> None:
        # The regex module's \d matches any Nd digit: Arabic-Indic three (U+0663) included.
        ip6 = ":".join(["\u0663a"] * 8)
        assert run("clean_ip_mapper", [f"<{ip6}>", None]) == ["<>", None]


class TestCleanLinks:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("ftp://user:password@ftp.example.com:21/", ""),
            ("FTP://user:password@ftp.example.COm:21/", ""),
            ("https://www.example.com/file.html?param1=value1&param2=value2", ""),
            ("This is a test,http://www.example.com/file.html?param1=value1", "This is a test,"),
            ("visit www.example.com now", "visit  now"),
            ("see example.org/x/y.", "see ."),
            ("(http://a.com/b(c)d)", "()"),
            ("mailto:someone@example.com", ""),
            ("no links here.", "no links here."),
            ("", ""),
        ],
    )
    def test_data_juicer_cases(self, text: str, expected: str) -> None:
        assert run("clean_links_mapper", [text]) == [expected]

    def test_unicode_word_boundary(self) -> None:
        # 'é' and the Devanagari vowel sign are word characters for the regex module, so there
        # is no \b before 'http'; '«' is not, so there is.
        texts = ["éhttp://x.com/a", "\u093ehttp://x.com/a", "«http://x.com/a»", None]
        assert run("clean_links_mapper", texts) == [
            "éhttp://x.com/a",
            "\u093ehttp://x.com/a",
            "«»",
            None,
        ]

    def test_start_on_dot_or_dash_needs_a_word_character_before(self) -> None:
        texts = ["a.b.com/xy", " .b.com/xy", "é-x.com/ab", " -x.com/ab", "a.b.com/x"]
        out = run("clean_links_mapper", texts, repl="<L>")
        # a host/path link needs two characters after the '/': "a.b.com/x" is no link
        assert out == ["<L>", " .<L>", "é<L>", " -<L>", "a.b.com/x"]

    def test_unicode_whitespace_ends_a_link(self) -> None:
        assert run("clean_links_mapper", ["http://a.com/x\u3000y", "http://a.com/x\u200by"]) == [
            "\u3000y",
            "",
        ]

    def test_case_folding_kelvin_and_long_s(self) -> None:
        # (?i)[a-z] matches U+212A KELVIN SIGN and U+017F LONG S, as in the regex module.
        assert run("clean_links_mapper", ["\u212aey://x", "\u017ftp://x"]) == ["", ""]

    def test_literal_repl_keeps_the_boundary_character(self) -> None:
        # "go:h" already reads as a scheme; "(go) " keeps its ')' and space
        texts = ["go:http://x.com/ ok", "(go) http://x.com/ ok"]
        assert run("clean_links_mapper", texts, repl="<L>") == ["<L> ok", "(go) <L> ok"]

    def test_template_repl_rejected_with_default_pattern(self) -> None:
        with pytest.raises(ValueError, match="literal repl"):
            get_op("clean_links_mapper")(repl=r"<\1>")

    def test_vectorised_pattern_agrees_with_lookbehind_translation(self) -> None:
        texts = [
            "x http://a.b/c, www1.foo.org (https://q.r/s(t)) z.co/ .y.com/ -k.io/ é.fr/a",
            "a.b.com/x(y)z! ſtp://u 〔http://v.w/〕 K://x www.a",
            "\u0663www\u0663.x/ http://a.com/x\u00a0b http://a.com/x\x1cb",
        ]
        compiled = re.compile(py_pattern(), re.DOTALL)
        assert run("clean_links_mapper", texts) == [compiled.sub("", t) for t in texts]
