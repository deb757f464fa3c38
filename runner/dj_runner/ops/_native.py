"""Whole-array C kernels (``dj_runner.ops._kernels``) on Arrow string arrays, for the ops.

The kernels read an array's offsets and UTF-8 data in place (no Python string per sample) and
take sets of code points as bitmaps of 0x110000 bits. Each helper here returns ``None`` when it
cannot run (the extension is not built, or the array is not a plain ``string`` array, or its
result would not fit ``string``'s int32 offsets); the op then takes its own plain path, which
gives the same results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.common.textutil import SPECIAL_CHARACTERS

try:
    from dj_runner.ops import _kernels as _native
except ImportError:  # installed without a C compiler
    _native = None

BITMAP_BYTES = 0x110000 // 8


def kernels() -> Any:
    """The extension module, or ``None`` without it."""
    return _native


def code_point_bitmap(code_points: Iterable[int]) -> bytes:
    """The bitmap of a set of code points: bit ``c`` for code point ``c``, little-endian."""
    bits = bytearray(BITMAP_BYTES)
    for c in code_points:
        bits[c >> 3] |= 1 << (c & 7)
    return bytes(bits)


@cache
def special_bitmap() -> bytes:
    """The bitmap of Data-Juicer's ``SPECIAL_CHARACTERS``."""
    return code_point_bitmap(ord(c) for c in SPECIAL_CHARACTERS)


@cache
def alnum_bitmap() -> bytes | None:
    """The bitmap of the code points with ``str.isalnum()`` (``None`` without the extension)."""
    return None if _native is None else _native.alnum_bitmap()


def _buffers(arr: pa.Array) -> tuple[memoryview, pa.Buffer] | None:
    """The offsets of ``arr``'s own slice and its data buffer, or ``None`` if not ``string``."""
    if _native is None or arr.type != pa.string():
        return None
    if len(arr) == 0:  # its offsets buffer may be absent or empty
        return memoryview(b"\0\0\0\0"), pa.py_buffer(b"")
    _, offsets, data = arr.buffers()
    start, stop = arr.offset * 4, (arr.offset + len(arr) + 1) * 4
    return memoryview(offsets)[start:stop], data if data is not None else pa.py_buffer(b"")


def _int64s(values: bytes, n: int) -> pa.Array:
    return pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(values)])


def _null_as(arr: pa.Array, values: pa.Array, empty: float) -> pa.Array:
    """``values`` computed over ``arr``'s slots, with a null text's slot set to ``empty``
    (what ``""`` gives: a null slot's bytes, which Arrow leaves unspecified, do not count)."""
    return values if arr.null_count == 0 else pc.if_else(pc.is_valid(arr), values, empty)


def count_in_set(arr: pa.Array, bitmap: bytes) -> pa.Array | None:
    """Per text, the number of code points in the set (int64); nulls count as ``""``'s 0."""
    bufs = _buffers(arr)
    if bufs is None:
        return None
    return _null_as(arr, _int64s(_native.count_in_set(*bufs, bitmap), len(arr)), 0)


def char_rep_ratios(arr: pa.Array, n: int) -> pa.Array | None:
    """Per text, character_repetition_filter's ratio of its ``n``-grams of code points
    (float64); nulls count as ``""``'s 0.0."""
    bufs = _buffers(arr)
    if bufs is None:
        return None
    ratios = pa.Array.from_buffers(
        pa.float64(), len(arr), [None, pa.py_buffer(_native.char_rep_ratios(*bufs, n))]
    )
    return _null_as(arr, ratios, 0.0)


def simple_word_rep_ratios(arr: pa.Array, n: int) -> tuple[pa.Array, list[int]] | None:
    """word_repetition_filter's ratio (float64) of each text of a null-free array that
    ``str.lower`` changes only in its ASCII letters, and the indices of the other texts, whose
    ratio is left 0.0 for the caller to compute."""
    bufs = _buffers(arr)
    if bufs is None:
        return None
    ratios, others = _native.simple_word_rep_ratios(*bufs, special_bitmap(), n)
    return pa.Array.from_buffers(pa.float64(), len(arr), [None, pa.py_buffer(ratios)]), others


def line_stats(arr: pa.Array) -> tuple[pa.Array, pa.Array] | None:
    """Per text, as ``str.splitlines()`` sees it: the length in code points of its longest
    line and its number of lines (int64 each); nulls count as ``""``'s 0 and 0."""
    bufs = _buffers(arr)
    if bufs is None:
        return None
    longest, lines = (_int64s(b, len(arr)) for b in _native.line_stats(*bufs))
    return _null_as(arr, longest, 0), _null_as(arr, lines, 0)


def count_words(arr: pa.Array, special: bytes) -> pa.Array | None:
    """Per text, the pieces between ``' '``, ``'\\n'``, ``'\\t'`` with a code point outside
    ``special`` (int64); nulls count as ``""``'s 0."""
    bufs = _buffers(arr)
    if bufs is None:
        return None
    return _null_as(arr, _int64s(_native.count_words(*bufs, special), len(arr)), 0)


def rewrite(
    arr: pa.Array, strip: bytes | None, replacements: Mapping[int, bytes], replace: bytes
) -> pa.Array | None:
    """Each text stripped of the ``strip`` set at both ends, then every code point of the
    ``replace`` bitmap written as ``replacements[code point]``; nulls stay null."""
    bufs = _buffers(arr)
    if bufs is None:
        return None
    try:
        offsets, data = _native.rewrite(*bufs, strip, replace, dict(replacements))
    except OverflowError:
        return None
    return _with_validity(arr, offsets, data)


def _with_validity(arr: pa.Array, offsets: bytes, data: bytes) -> pa.Array | None:
    """A string array of a kernel's ``offsets`` and ``data``, with ``arr``'s nulls."""
    validity = None
    if arr.null_count:
        valid = pc.is_valid(arr)
        if valid.offset != 0:
            return None
        validity = valid.buffers()[1]
    return pa.Array.from_buffers(
        pa.string(),
        len(arr),
        [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=arr.null_count,
    )


def json_strings(arr: pa.Array) -> pa.Array | None:
    """Each text as ``json.dumps(text, ensure_ascii=False)`` writes it (quotes included); nulls
    stay null."""
    bufs = _buffers(arr)
    if bufs is None:
        return None
    try:
        offsets, data = _native.json_quote(*bufs)
    except OverflowError:
        return None
    return _with_validity(arr, offsets, data)
