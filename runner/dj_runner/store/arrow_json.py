"""Arrow values as JSON, both ways: lossless for checkpoints, readable for the export.

JSON has strings, numbers, booleans, null, arrays and objects; Arrow has more. The rule,
for a column of any Arrow type the readers produce (nested structs and lists included):

- binary (``binary``, ``large_binary``, ``fixed_size_binary``): a base64 string (RFC 4648,
  standard alphabet, padded), in checkpoints and in the JSONL export alike;
- timestamps, dates, times and durations: in a checkpoint, their integer value in the
  type's unit (the schema kept with the checkpoint restores the type, time zone and unit);
  in the JSONL export, their ISO-8601 text (``2024-05-01 12:00:00+00:00``, ``2024-05-01``);
- decimals: a decimal string (``"12.340"``), exact at the type's scale;
- dictionary-encoded values: the plain value;
- everything else: the JSON value itself (NaN and infinities as Python's ``json`` writes them).

Maps, unions and half floats have no lossless JSON form here: ``jsonl_unsupported`` finds
them, and a recipe with JSONL checkpoints over such an input is refused before work starts.

``encode_table``/``decode_table`` implement the checkpoint direction with a schema that
travels with the data (``json_schema`` gives the intermediate one); ``export_default`` is the
``default=`` of ``json.dumps`` for the export.
"""

from __future__ import annotations

import base64
from typing import Any

import pyarrow as pa

__all__ = ["decode_table", "encode_table", "export_default", "json_schema", "jsonl_unsupported"]


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _is_temporal(t: pa.DataType) -> bool:
    return pa.types.is_temporal(t)


def _map_type(t: pa.DataType, leaf) -> pa.DataType:
    """``t`` with ``leaf`` applied to every non-nested type inside it."""
    if pa.types.is_dictionary(t):
        return _map_type(t.value_type, leaf)
    if pa.types.is_struct(t):
        return pa.struct(
            [t.field(i).with_type(_map_type(t.field(i).type, leaf)) for i in range(t.num_fields)]
        )
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_map_type(t.value_type, leaf)))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(_map_type(t.value_type, leaf)), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_map_type(t.value_type, leaf)))
    if pa.types.is_map(t):
        return pa.map_(
            _map_type(t.key_type, leaf), t.item_field.with_type(_map_type(t.item_type, leaf))
        )
    return leaf(t)


def _b64_leaf(t: pa.DataType) -> pa.DataType:
    return pa.string() if _is_binary(t) else t


def _json_leaf(t: pa.DataType) -> pa.DataType:
    if _is_binary(t) or pa.types.is_decimal(t):
        return pa.string()
    if pa.types.is_timestamp(t) or pa.types.is_date64(t) or pa.types.is_duration(t):
        return pa.int64()
    if pa.types.is_time64(t):
        return pa.int64()
    if pa.types.is_date32(t) or pa.types.is_time32(t):
        return pa.int32()
    if pa.types.is_large_string(t):
        return pa.string()
    return t


def _has(t: pa.DataType, pred) -> bool:
    if pred(t):
        return True
    if pa.types.is_dictionary(t):
        return _has(t.value_type, pred)
    if pa.types.is_struct(t):
        return any(_has(t.field(i).type, pred) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has(t.value_type, pred)
    if pa.types.is_map(t):
        return _has(t.key_type, pred) or _has(t.item_type, pred)
    return False


def jsonl_unsupported(t: pa.DataType) -> bool:
    """Types JSON checkpoints cannot restore (maps, unions, half floats): refused up front."""
    return _has(
        t,
        lambda x: pa.types.is_map(x) or pa.types.is_union(x) or pa.types.is_float16(x),
    )


def json_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of ``encode_table(t)`` for a table ``t`` of ``schema`` (metadata kept)."""
    return pa.schema(
        [f.with_type(_map_type(f.type, _json_leaf)) for f in schema], metadata=schema.metadata
    )


def _walk(value: Any, t: pa.DataType, convert) -> Any:
    """Apply ``convert`` to every binary leaf of a Python value of type ``t``."""
    if value is None:
        return None
    if pa.types.is_dictionary(t):
        return _walk(value, t.value_type, convert)
    if _is_binary(t):
        return convert(value)
    if pa.types.is_struct(t):
        return {
            t.field(i).name: _walk(value.get(t.field(i).name), t.field(i).type, convert)
            for i in range(t.num_fields)
        }
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_walk(v, t.value_type, convert) for v in value]
    if pa.types.is_map(t):
        return [(_walk(k, t.key_type, convert), _walk(v, t.item_type, convert)) for k, v in value]
    return value


def _b64encode(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _b64decode(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


def _column(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _cast(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """``arr.cast(target)``, blind to child values hidden under a null struct or list.

    A null struct still stores child values (often zeros or empty strings); a plain cast
    converts them too and fails on ones that only a null hides (an empty string as a decimal).
    """
    if arr.type == target:
        return arr
    mask = arr.is_null() if arr.null_count else None
    if pa.types.is_struct(target) and pa.types.is_struct(arr.type):
        children = [_cast(child, target.field(i).type) for i, child in enumerate(arr.flatten())]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    if pa.types.is_list(target) and pa.types.is_list(arr.type):
        return pa.ListArray.from_arrays(
            arr.offsets, _cast(arr.values, target.value_type), type=target, mask=mask
        )
    if pa.types.is_large_list(target) and pa.types.is_large_list(arr.type):
        return pa.LargeListArray.from_arrays(
            arr.offsets, _cast(arr.values, target.value_type), type=target, mask=mask
        )
    return arr.cast(target)


def encode_column(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = _column(col)
    t = arr.type
    if _has(t, _is_binary):
        values = [_walk(v, t, _b64encode) for v in arr.to_pylist()]
        arr = pa.array(values, type=_map_type(t, _b64_leaf))
    return _cast(arr, _map_type(t, _json_leaf))


def decode_column(col: pa.ChunkedArray | pa.Array, t: pa.DataType) -> pa.Array:
    arr = _column(col)
    intermediate = _map_type(t, _b64_leaf)
    arr = _cast(arr, intermediate)
    if _has(t, _is_binary):
        values = [_walk(v, t, _b64decode) for v in arr.to_pylist()]
        return pa.array(values, type=t)
    return _cast(arr, t)


def encode_table(table: pa.Table) -> pa.Table:
    """``table`` with every column in its JSON form (see the module's rule)."""
    schema = json_schema(table.schema)
    return pa.Table.from_arrays([encode_column(c) for c in table.columns], schema=schema)


def decode_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The inverse of ``encode_table``: ``table`` (of ``json_schema(schema)``) as ``schema``."""
    return pa.Table.from_arrays(
        [decode_column(table.column(f.name), f.type) for f in schema], schema=schema
    )


def export_default(value: Any) -> Any:
    """``json.dumps``'s ``default=`` for the JSONL export: bytes as base64, the rest as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return _b64encode(bytes(value))
    return str(value)  # datetime: ISO-8601 with a space; date: ISO-8601; Decimal: exact
