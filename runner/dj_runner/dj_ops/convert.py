"""Arrow tables to Data-Juicer's batches (a dict of lists) and back.

Data-Juicer's ops take a batch as ``{column: [value, ...]}`` with the stats of each sample
as a dict under ``__dj__stats__``. Going there: every column becomes a list of Python
values; a column kept as JSON text (fields whose records disagree on type) is decoded; stats
keys whose value is null are left out, because Data-Juicer skips a stat that is present.
Coming back: a column that existed keeps its Arrow type where the values still fit it, JSON
text stays JSON text, new columns get the type Arrow infers; the stats dicts become the
``__dj__stats__`` struct column with Data-Juicer's key names.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from dj_runner.io.table_schema import is_json_text, json_text_array
from dj_runner.ops.common.base import STATS_COLUMN

Batch = dict[str, list[Any]]


def to_dj_batch(table: pa.Table) -> Batch:
    """The table as Data-Juicer's dict of lists."""
    batch: Batch = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        values = column.to_pylist()
        if is_json_text(field):
            values = [None if v is None else json.loads(v) for v in values]
        elif field.name == STATS_COLUMN:
            values = [
                {} if s is None else {k: v for k, v in s.items() if v is not None} for s in values
            ]
        batch[field.name] = values
    return batch


def _typed(values: list[Any], field: pa.Field | None) -> tuple[pa.Field, pa.Array]:
    if field is not None and is_json_text(field):
        return field, json_text_array(values)
    if field is not None:
        try:
            return field, pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass  # the op changed the values' type: infer it
    array = pa.array(values)
    name = field.name if field is not None else ""
    return pa.field(name, array.type), array


def _stats_array(stats: list[Any], old: pa.Field | None) -> pa.Array | None:
    """The stats struct; None when no sample has a stat and the table had no stats column."""
    rows = [s if isinstance(s, dict) else {} for s in stats]
    if not any(rows):
        if old is None or old.type.num_fields == 0:
            return None  # Parquet cannot hold a struct without fields
        return pa.nulls(len(rows), old.type)
    # Key by key: the keys the column had keep their types, new keys get the inferred one.
    known = {f.name: f for f in old.type} if old is not None else {}
    keys = list(known)
    for row in rows:
        keys.extend(k for k in row if k not in known and k not in keys)
    fields, arrays = [], []
    for key in keys:
        values = [row.get(key) for row in rows]
        _, array = _typed(values, known.get(key))
        fields.append(pa.field(key, array.type))
        arrays.append(array)
    return pa.StructArray.from_arrays(arrays, fields=fields)


def from_dj_batch(batch: Batch, schema: pa.Schema) -> pa.Table:
    """Data-Juicer's dict of lists back to Arrow, with the original schema where it fits."""
    fields: list[pa.Field] = []
    arrays: list[pa.Array] = []
    for name, values in batch.items():
        if not isinstance(values, list):
            values = list(values)
        if name == STATS_COLUMN:
            stats = _stats_array(values, schema.field(name) if name in schema.names else None)
            if stats is None:
                continue
            array = stats
            fields.append(pa.field(name, array.type))
        else:
            old = schema.field(name) if name in schema.names else None
            field, array = _typed(values, old)
            fields.append(field.with_name(name))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
