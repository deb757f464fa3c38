"""clean_links_mapper: remove (or replace with ``repl``) URLs and other links.

Data-Juicer's default pattern is case-insensitive and uses the ``regex`` module's Unicode
``\b``, ``\\w``, ``\\d`` and ``\\s``. It runs vectorised in RE2 as an exact translation: the
shorthand classes are spelled out as explicit classes, and the leading ``\b`` (RE2 has no
look-behind) becomes a captured one-character prefix that is written back in the replacement:
a word-character start must follow a non-word character (or the start of the text), and a
start on ``.``/``-`` must follow a word character. No match can begin at the very end of the
previous match (a match always stops before whitespace, ``()<>`` or a tail of excluded final
characters), so consuming the prefix never hides a match.

A ``repl`` containing backslash escapes/group references is rejected with the default pattern:
the only exact per-sample engine at hand, Python's ``re`` (``py_pattern``), backtracks
exponentially on some inputs with this pattern. A user ``pattern`` runs per sample with
Python's ``re`` as written.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dj_runner.ops.common.base import Mapper
from dj_runner.ops.common.params import param
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import (
    REGEX_WHITE_SPACE,
    clean_with_pattern,
    decimal_ranges,
    py_class_body,
    re2_class_body,
    to_ranges,
    word_ranges,
)

_FINAL_EXCLUDED = r"`!()\[\]{};:'\".,<>?«»“”‘’"


def _body(s: str, group: str) -> str:
    """The part after the head; ``s`` is the whitespace class body, ``group`` opens a group."""
    no_space = rf"[^{s}()<>]"
    g = group
    return (
        rf"(?:{no_space}+|\({g}{no_space}+|{g}\({no_space}+\)))*\))+"
        rf"(?:\({g}{no_space}+|{g}\({no_space}+\)))*\)|[^{s}{_FINAL_EXCLUDED}])"
    )


def py_pattern() -> str:
    """Data-Juicer's default pattern for Python ``re``, same groups, same matches."""
    w = py_class_body(word_ranges())
    d = py_class_body(decimal_ranges())
    s = py_class_body(to_ranges(ord(c) for c in REGEX_WHITE_SPACE))
    boundary = rf"(?:(?<=[{w}])(?![{w}])|(?<![{w}])(?=[{w}]))"
    head = (
        rf"(?:[a-z][{w}\-]+:(?:/{{1,3}}|[a-z0-9%])|www[{d}]{{0,3}}[.]|[a-z0-9.\-]+[.][a-z]{{2,4}}/)"
    )
    return boundary + rf"(?i:({head}{_body(s, '(')}))"


def re2_pattern() -> str:
    """Data-Juicer's default pattern for RE2; groups 1 and 2 hold the ``\\b`` prefix."""
    w = re2_class_body(word_ranges())
    d = re2_class_body(decimal_ranges())
    s = re2_class_body(to_ranges(ord(c) for c in REGEX_WHITE_SPACE))
    head_word = (
        rf"[a-z][{w}\-]+:(?:/{{1,3}}|[a-z0-9%])|www[{d}]{{0,3}}[.]"
        rf"|[a-z0-9][a-z0-9.\-]*[.][a-z]{{2,4}}/"
    )
    head_nonword = r"[.\-][a-z0-9.\-]*[.][a-z]{2,4}/"
    body = _body(s, "(?:")
    return rf"(?:(^|[^{w}])(?i:{head_word})|([{w}])(?i:{head_nonword}))(?i:{body})"


@register("clean_links_mapper")
@dataclass(frozen=True, kw_only=True)
class CleanLinksMapper(Mapper):
    """``pattern=None`` uses Data-Juicer's default link pattern; matches become ``repl``."""

    pattern: str | None = param(
        None,
        description="a Python regular expression; null uses the default pattern",
        regex=True,
        repl_field="repl",
    )
    repl: str = param("", description="what each match becomes")

    def __post_init__(self) -> None:
        if self.pattern is None and "\\" in self.repl:
            raise ValueError(
                "clean_links_mapper: a repl with backslash escapes or group references is not "
                "supported with the default pattern; use a literal repl"
            )

    def process(self, texts: pa.Array) -> pa.Array:
        return clean_with_pattern(
            texts,
            self.pattern,
            self.repl,
            default_re2=re2_pattern,
            default_py=py_pattern,
            re2_repl_prefix=r"\1\2",
        )
