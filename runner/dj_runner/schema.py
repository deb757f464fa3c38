"""One schema for tables built in pieces: partitions at export, chunks of one partition.

Records may carry different fields and types. Pieces are unified without coercing any value:
a field whose pieces disagree on its type becomes JSON text (``1`` never turns into ``1.0``),
so the result does not depend on where the pieces were cut.
"""

from __future__ import annotations

import pyarrow as pa

from dj_runner.sources import is_json_text, json_text_array, json_text_field


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
