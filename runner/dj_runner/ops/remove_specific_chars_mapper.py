"""remove_specific_chars_mapper: delete every occurrence of the given characters.

Data-Juicer 1.6.1 builds ``"[" + "".join(regex.escape(c) for c in chars_to_remove) + "]"``:
every character of the string (or of every string in the list) is removed, literally; an
empty value removes nothing. Vectorised: one RE2 replace with an explicit code point class.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.common.base import Mapper
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import as_array, chars_class

DEFAULT_CHARS_TO_REMOVE = "◆●■►▼▲▴∆▻▷❖♡□"


@register("remove_specific_chars_mapper")
@dataclass(frozen=True, kw_only=True)
class RemoveSpecificCharsMapper(Mapper):
    """``chars_to_remove``: a string, or a list of strings, of characters to delete."""

    chars_to_remove: str | list[str] = DEFAULT_CHARS_TO_REMOVE

    def __post_init__(self) -> None:
        value = self.chars_to_remove
        if not isinstance(value, str) and not (
            isinstance(value, list | tuple) and all(isinstance(c, str) for c in value)
        ):
            raise ValueError(f"chars_to_remove must be a str or a list of str, got {value!r}")

    def char_set(self) -> frozenset[str]:
        """The characters this op removes."""
        return frozenset("".join(self.chars_to_remove))

    def process(self, texts: pa.Array) -> pa.Array:
        chars = self.char_set()
        if not chars:
            return as_array(texts)
        return pc.replace_substring_regex(
            as_array(texts), pattern=chars_class(chars), replacement=""
        )
