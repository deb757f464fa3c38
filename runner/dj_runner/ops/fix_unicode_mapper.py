"""fix_unicode_mapper: ``ftfy.fix_text(text, normalization=...)`` on every sample.

Per-sample (ftfy is a Python library with no vectorised form). ``normalization`` is one of
NFC, NFKC, NFD, NFKD (case-insensitive); ``None`` or ``""`` mean NFC, as in Data-Juicer.
"""

from __future__ import annotations

from dataclasses import dataclass

import ftfy
import pyarrow as pa

from dj_runner.ops.common.base import Mapper
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import as_array

NORMALIZATIONS = ("NFC", "NFKC", "NFD", "NFKD")


@register("fix_unicode_mapper")
@dataclass(frozen=True, kw_only=True)
class FixUnicodeMapper(Mapper):
    """Fixes mojibake and other Unicode errors, then normalises to ``normalization``."""

    normalization: str | None = "NFC"

    def __post_init__(self) -> None:
        if self.form() not in NORMALIZATIONS:
            raise ValueError(
                f"normalization mode [{self.normalization}] is not supported; "
                f"use one of {list(NORMALIZATIONS)}"
            )

    def form(self) -> str:
        """The effective normalization form."""
        return self.normalization.upper() if self.normalization else "NFC"

    def process(self, texts: pa.Array) -> pa.Array:
        form = self.form()
        arr = as_array(texts)
        fixed = [
            None if t is None else ftfy.fix_text(t, normalization=form) for t in arr.to_pylist()
        ]
        return pa.array(fixed, type=arr.type)
