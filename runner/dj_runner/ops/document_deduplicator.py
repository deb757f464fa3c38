r"""document_deduplicator: exact deduplication by Data-Juicer's md5 of the text.

``__dj__hash`` = ``md5((text.lower() if lowercase) with non-characters removed if
ignore_non_character, then .strip(), UTF-8).hexdigest()``. "Non-characters" are the ``regex``
module's ``\s`` (Unicode White_Space) and ``\d`` (category Nd) and ``string.punctuation``,
spelled out as one explicit class. A null text hashes as ``""``. The executor keeps the first
sample of each hash, globally.

Per-sample: there is no md5 kernel in Arrow (and ``str.lower`` has special casings).
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass

import pyarrow as pa

from dj_runner.ops.common.base import Deduplicator
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import REGEX_WHITE_SPACE, as_array, decimal_ranges, py_class_body


def _non_character_regex() -> re.Pattern[str]:
    digits = py_class_body(decimal_ranges())
    spaces = "".join(sorted(REGEX_WHITE_SPACE))
    return re.compile("[" + re.escape(spaces + string.punctuation) + digits + "]+")


@register("document_deduplicator")
@dataclass(frozen=True, kw_only=True)
class DocumentDeduplicator(Deduplicator):
    """Hash = md5 hex digest, 32 lower-case hex characters."""

    lowercase: bool = False
    ignore_non_character: bool = False

    def compute_hash(self, texts: pa.Array) -> pa.Array:
        remover = _non_character_regex() if self.ignore_non_character else None
        hashes = []
        for text in as_array(texts).to_pylist():
            t = "" if text is None else text
            if self.lowercase:
                t = t.lower()
            if remover is not None:
                t = remover.sub("", t)
            hashes.append(hashlib.md5(t.strip().encode("utf-8")).hexdigest())
        return pa.array(hashes, pa.string())
