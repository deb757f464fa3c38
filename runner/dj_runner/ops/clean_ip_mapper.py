r"""clean_ip_mapper: remove (or replace with ``repl``) IPv4 and IPv6 addresses.

Data-Juicer's default pattern, with the ``regex`` module's Unicode ``\d`` (category Nd) in the
IPv6 part written out as an explicit class, runs vectorised in RE2. A user ``pattern``, or a
``repl`` with backslash escapes/group references, runs per sample with Python's ``re``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dj_runner.ops.common.base import Mapper
from dj_runner.ops.common.params import param
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import (
    clean_with_pattern,
    decimal_ranges,
    py_class_body,
    re2_class_body,
)

_IPV4 = (
    r"(?:(?:1[0-9][0-9]\.)|(?:2[0-4][0-9]\.)|(?:25[0-5]\.)|(?:[1-9][0-9]\.)|(?:[0-9]\.))"
    r"{3}(?:(?:1[0-9][0-9])|(?:2[0-4][0-9])|(?:25[0-5])|(?:[1-9][0-9])|(?:[0-9]))"
)
_IPV6 = r"([{d}a-fA-F]{{1,4}}:){{7}}[{d}a-fA-F]{{1,4}}"


def default_pattern(digit_class_body: str) -> str:
    """Data-Juicer's IP pattern with ``\\d`` spelled as the given class body."""
    return _IPV4 + "|" + _IPV6.format(d=digit_class_body)


@register("clean_ip_mapper")
@dataclass(frozen=True, kw_only=True)
class CleanIpMapper(Mapper):
    """``pattern=None`` uses Data-Juicer's default IPv4/IPv6 pattern; matches become ``repl``."""

    pattern: str | None = param(
        None,
        description="a Python regular expression; null uses the default pattern",
        regex=True,
        repl_field="repl",
    )
    repl: str = param("", description="what each match becomes")

    def process(self, texts: pa.Array) -> pa.Array:
        return clean_with_pattern(
            texts,
            self.pattern,
            self.repl,
            default_re2=lambda: default_pattern(re2_class_body(decimal_ranges())),
            default_py=lambda: default_pattern(py_class_body(decimal_ranges())),
        )
