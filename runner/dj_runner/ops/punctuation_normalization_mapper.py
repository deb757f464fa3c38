"""punctuation_normalization_mapper: map Unicode punctuation to ASCII, Data-Juicer's table.

Vectorised: one pass over the batch's bytes in C (``_kernels.rewrite``, each key code point
written as its value) when the extension is built, else one literal Arrow replace per table
entry. Every key is a single non-ASCII character and every value is ASCII, so applying the
entries one after another equals Data-Juicer's simultaneous per-character mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops import _native as native
from dj_runner.ops.common.base import Mapper
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import as_array


@register("punctuation_normalization_mapper")
@dataclass(frozen=True, kw_only=True)
class PunctuationNormalizationMapper(Mapper):
    """Replaces each character found in ``PUNCTUATION_UNICODE`` by its ASCII equivalent."""

    PUNCTUATION_UNICODE: ClassVar[dict[str, str]] = {
        "\uff0c": ",",  # ，
        "\u3002": ".",  # 。
        "\u3001": ",",  # 、
        "\u201e": '"',  # „
        "\u201d": '"',  # ”
        "\u201c": '"',  # “
        "\u00ab": '"',  # «
        "\u00bb": '"',  # »
        "\uff11": '"',  # １ (fullwidth digit one; Data-Juicer maps it to a quote)
        "\u300d": '"',  # 」
        "\u300c": '"',  # 「
        "\u300a": '"',  # 《
        "\u300b": '"',  # 》
        "\u00b4": "'",  # ´
        "\u2236": ":",  # ∶
        "\uff1a": ":",  # ：
        "\uff1f": "?",  # ？
        "\uff01": "!",  # ！
        "\uff08": "(",  # （
        "\uff09": ")",  # ）
        "\uff1b": ";",  # ；
        "\u2013": "-",  # –
        "\u2014": " - ",  # —
        "\uff0e": ". ",  # ．
        "\uff5e": "~",  # ～
        "\u2019": "'",  # ’
        "\u2026": "...",  # …
        "\u2501": "-",  # ━
        "\u3008": "<",  # 〈
        "\u3009": ">",  # 〉
        "\u3010": "[",  # 【
        "\u3011": "]",  # 】
        "\uff05": "%",  # ％
        "\u25ba": "-",  # ►
    }

    @classmethod
    @cache
    def _native_table(cls) -> tuple[dict[int, bytes], bytes]:
        """The table as code points to UTF-8 bytes, and the bitmap of its keys."""
        table = {ord(k): v.encode() for k, v in cls.PUNCTUATION_UNICODE.items()}
        return table, native.code_point_bitmap(table)

    def process(self, texts: pa.Array) -> pa.Array:
        out = as_array(texts)
        table, keys = self._native_table()
        rewritten = native.rewrite(out, None, table, keys)
        if rewritten is not None:
            return rewritten
        for src, dst in self.PUNCTUATION_UNICODE.items():
            out = pc.replace_substring(out, pattern=src, replacement=dst)
        return out
