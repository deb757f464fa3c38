"""clean_email_mapper: remove (or replace with ``repl``) e-mail addresses.

The default pattern is ASCII-only, so it runs vectorised in RE2 with exactly Data-Juicer's
matches. A user ``pattern``, or a ``repl`` with backslash escapes/group references, runs per
sample with Python's ``re`` (Data-Juicer uses the ``regex`` module; patterns relying on its
extensions or on Unicode shorthand classes may differ).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dj_runner.ops.common.base import Mapper
from dj_runner.ops.common.params import param
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import clean_with_pattern

DEFAULT_EMAIL_PATTERN = r"[A-Za-z0-9.\-+_]+@[a-z0-9.\-+_]+\.[a-z]+"


@register("clean_email_mapper")
@dataclass(frozen=True, kw_only=True)
class CleanEmailMapper(Mapper):
    """``pattern=None`` uses Data-Juicer's default e-mail pattern; matches become ``repl``."""

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
            default_re2=lambda: DEFAULT_EMAIL_PATTERN,
            default_py=lambda: DEFAULT_EMAIL_PATTERN,
        )
