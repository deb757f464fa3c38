"""whitespace_normalization_mapper: strip the text, then map unusual spaces to ``' '``.

Data-Juicer's semantics: ``text.strip()`` (every ``str.isspace`` character, including NBSP,
U+1680, U+2028/2029 and U+001C..U+001F), then each character of ``VARIOUS_WHITESPACES``
(tab, NBSP, U+2000..U+200D, U+202F, U+205F, U+2060, U+3000, U+FFFC, U+0084) becomes ``' '``.
Newlines are kept. Fully vectorised (two RE2 replaces with explicit character classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.base import Mapper
from dj_runner.ops.registry import register
from dj_runner.ops.textutil import (
    VARIOUS_WHITESPACES,
    as_array,
    chars_class,
    isspace_ranges,
    re2_class,
)


@register("whitespace_normalization_mapper")
@dataclass(frozen=True, kw_only=True)
class WhitespaceNormalizationMapper(Mapper):
    """Strips leading/trailing whitespace and normalises Unicode spaces to ASCII space."""

    def process(self, texts: pa.Array) -> pa.Array:
        space = re2_class(isspace_ranges())
        stripped = pc.replace_substring_regex(
            as_array(texts), pattern=f"^{space}+|{space}+$", replacement=""
        )
        return pc.replace_substring_regex(
            stripped, pattern=chars_class(VARIOUS_WHITESPACES), replacement=" "
        )
