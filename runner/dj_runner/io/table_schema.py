"""One schema for tables built in pieces: partitions at export, chunks of one partition.

Records may carry different fields and types. Pieces are unified without coercing any value:
a field whose pieces disagree on its type becomes JSON text (``1`` never turns into ``1.0``),
so the result does not depend on where the pieces were cut.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

JSON_COLUMN_META = b"dj_json"


def json_text_field(name: str) -> pa.Field:
    """A string field holding JSON text, to be decoded on JSONL export."""
    return pa.field(name, pa.string(), metadata={JSON_COLUMN_META: b"1"})


def is_json_text(field: pa.Field) -> bool:
    return bool(field.metadata) and field.metadata.get(JSON_COLUMN_META) == b"1"


def json_text_array(values: list[Any]) -> pa.Array:
    return pa.array(
        [None if v is None else json.dumps(v, ensure_ascii=False) for v in values],
        type=pa.string(),
    )


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    """One export schema for every partition, whatever each partition's records carried.

    Fields come in order of first appearance. A field whose partitions disagree on its type
    (beyond all-null) becomes JSON text, so no value is coerced (1 never turns into 1.0).
    """
    seen: dict[str, list[pa.Field]] = {}
    for schema in schemas:
        for f in schema:
            seen.setdefault(f.name, []).append(f)
    fields = []
    for name, versions in seen.items():
        typed = [f for f in versions if not pa.types.is_null(f.type)]
        if not typed:
            fields.append(versions[0])
        elif any(is_json_text(f) for f in typed) or len({f.type for f in typed}) > 1:
            fields.append(json_text_field(name))
        else:
            fields.append(typed[0])
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give a table the unified schema: missing columns null, JSON text where needed."""
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(len(table), f.type))
            continue
        col = table.column(f.name)
        have = table.schema.field(f.name)
        if is_json_text(f) and not is_json_text(have):
            columns.append(json_text_array(col.to_pylist()))
        elif is_json_text(have) and not is_json_text(f):
            values = [None if v is None else json.loads(v) for v in col.to_pylist()]
            columns.append(pa.array(values, type=f.type))
        elif have.type != f.type:
            columns.append(col.cast(f.type))
        else:
            columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def concat_unified(tables: list[pa.Table]) -> pa.Table:
    """Concatenate pieces under their unified schema."""
    if len(tables) == 1:
        return tables[0]
    schema = unify([t.schema for t in tables])
    return pa.concat_tables([conform(t, schema) for t in tables])


def _nested(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t)


def typed_nested(schema: pa.Schema, tables: Iterable[pa.Table]) -> pa.Schema:
    """``schema`` with each JSON-text field that holds nested values given their Arrow type.

    A field qualifies when every piece's values (objects, or lists) form one nested Arrow type
    (nulls aside): for a columnar export, such as Parquet, that keeps ``{"a": 1}`` a struct,
    not a string. Anything else (scalars of mixed JSON types, shapes Arrow cannot unify) stays
    JSON text. ``tables`` are read for the JSON-text columns only.
    """
    candidates = [f.name for f in schema if is_json_text(f)]
    if not candidates:
        return schema
    found: dict[str, pa.DataType | None] = dict.fromkeys(candidates)
    failed: set[str] = set()
    for table in tables:
        for name in candidates:
            if name in failed or name not in table.column_names:
                continue
            raw = [v for v in table.column(name).to_pylist() if v is not None]
            if not raw:
                continue
            try:
                t = pa.array([json.loads(v) for v in raw]).type
                if not _nested(t):
                    raise TypeError(name)
                if found[name] is not None and found[name] != t:
                    t = (
                        pa.unify_schemas([pa.schema([(name, found[name])]), pa.schema([(name, t)])])
                        .field(name)
                        .type
                    )
                found[name] = t
            except (pa.ArrowException, TypeError, ValueError):
                failed.add(name)
    fields = []
    for f in schema:
        t = found.get(f.name)
        fields.append(pa.field(f.name, t) if t is not None and f.name not in failed else f)
    return pa.schema(fields, metadata=schema.metadata)
