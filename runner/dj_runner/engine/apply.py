"""Applying one op to a partition's Arrow table: mappers, filters with stats, hashing.

Pure functions of (op, table). Filters write Data-Juicer-compatible stats into the
``__dj__stats__`` struct column and drop the rows out of range. When an op raises, the
batch is replayed one sample at a time to name the sample that fails.
"""

from __future__ import annotations

import json

import pyarrow as pa

from dj_runner.ops.common.base import (
    HASH_COLUMN,
    STATS_COLUMN,
    Deduplicator,
    Filter,
    Mapper,
    Op,
    SampleError,
    TableOp,
)


def _text(table: pa.Table, text_key: str) -> pa.Array:
    col = table.column(text_key)
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _locate(call, texts: pa.Array | pa.Table, exc: BaseException) -> SampleError:
    for i in range(len(texts)):
        try:
            call(texts.slice(i, 1))
        except Exception:
            value = texts[i].as_py() if isinstance(texts, pa.Array) else None
            preview = value[:200] if isinstance(value, str) else None
            return SampleError(i, preview, exc)
    return SampleError(None, None, exc)


def _run(call, texts: pa.Array):
    try:
        return call(texts)
    except Exception as exc:
        raise _locate(call, texts, exc) from exc


def existing_stats(column: pa.ChunkedArray) -> pa.StructArray | None:
    """An input's ``__dj__stats__`` column as a struct, however it was read.

    The output of an earlier run with ``keep_stats_in_res_ds`` carries it as a struct
    (Parquet, Arrow) or as JSON objects (JSONL, held as JSON text); an all-null column has no
    keys. Objects that cannot form one struct are an error naming the column.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_struct(arr.type):
        return arr
    if pa.types.is_null(arr.type) or arr.null_count == len(arr):
        return None
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            values = [None if v is None else json.loads(v) for v in arr.to_pylist()]
            parsed = pa.array(values)
        except (ValueError, pa.ArrowException) as exc:
            raise TypeError(
                f"input column {STATS_COLUMN!r} holds values that are not one JSON object "
                f"shape ({exc})"
            ) from exc
        if pa.types.is_struct(parsed.type):
            return parsed
    raise TypeError(
        f"input column {STATS_COLUMN!r} is {arr.type}; expected the stats objects a previous "
        "run wrote (rename or drop that column)"
    )


def merge_stats(table: pa.Table, new: dict[str, pa.Array]) -> pa.Table:
    """Add (or overwrite) keys in the ``__dj__stats__`` struct column.

    Stats already there (input that an earlier run wrote with ``keep_stats_in_res_ds``) are
    kept, and a key this op computes again is replaced, as chained Data-Juicer runs do.
    """
    arrays: dict[str, pa.Array] = {}
    if STATS_COLUMN in table.column_names:
        old = existing_stats(table.column(STATS_COLUMN))
        if old is not None:
            for f, child in zip(old.type, old.flatten(), strict=True):
                arrays[f.name] = child
    arrays.update(new)
    struct = pa.StructArray.from_arrays(list(arrays.values()), names=list(arrays))
    if STATS_COLUMN in table.column_names:
        idx = table.column_names.index(STATS_COLUMN)
        return table.set_column(idx, STATS_COLUMN, struct)
    return table.append_column(STATS_COLUMN, struct)


def apply_mapper(op: Mapper, table: pa.Table, text_key: str) -> pa.Table:
    texts = _text(table, text_key)
    out = _run(op.process, texts)
    idx = table.column_names.index(text_key)
    return table.set_column(idx, pa.field(text_key, pa.string()), out)


def apply_filter(op: Filter, table: pa.Table, text_key: str) -> tuple[pa.Table, pa.Array]:
    """The rows of ``table`` that ``op`` keeps, with its stats; and the mask that kept them."""
    texts = _text(table, text_key)
    stats = _run(op.compute_stats, texts)
    stats = {
        k: pa.array(v, type=op.stats_types.get(k)) if not isinstance(v, pa.Array) else v
        for k, v in stats.items()
    }
    keep = op.keep(stats)
    if isinstance(keep, pa.ChunkedArray):
        keep = keep.combine_chunks()
    elif not isinstance(keep, pa.Array):
        keep = pa.array(keep, type=pa.bool_())
    return merge_stats(table, stats).filter(keep), keep


def add_hashes(op: Deduplicator, table: pa.Table, text_key: str) -> pa.Table:
    """Append a global op's signature columns (``__dj__hash`` for exact deduplication)."""
    try:
        columns = op.signatures(table, text_key)
    except SampleError:
        raise
    except Exception as exc:
        raise _locate(lambda t: op.signatures(t, text_key), table, exc) from exc
    table = table.drop_columns([c for c in columns if c in table.column_names])
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def apply_keep_mask(table: pa.Table, mask: pa.Array, op: Deduplicator | None = None) -> pa.Table:
    """Apply a global op's decision and drop its signature columns."""
    table = table.filter(mask)
    drop = op.signature_columns if op is not None else (HASH_COLUMN,)
    return table.drop_columns([c for c in drop if c in table.column_names])


#: Rows an op sees at once. Ops are row-wise, so slicing changes no result; it bounds the
#: Python objects that per-sample ops create, whatever the partition's size.
BATCH_ROWS = 2048


def apply_local(op: Op, table: pa.Table, text_key: str) -> pa.Table:
    """Apply a mapper or filter, in slices of ``BATCH_ROWS`` rows.

    Global ops go through ``add_hashes``/``apply_keep_mask``.
    """
    return apply_local_kept(op, table, text_key)[0]


def apply_local_kept(op: Op, table: pa.Table, text_key: str) -> tuple[pa.Table, pa.Array | None]:
    """``apply_local``, and which rows of ``table`` a filter kept (a mask over them; None for
    a mapper, whose rows are the input's one for one, and for a ``TableOp``)."""
    if isinstance(op, TableOp):  # batches the table itself (the Data-Juicer bridge)
        return op.apply_table(table, text_key), None
    if len(table) <= BATCH_ROWS:
        return _apply_local(op, table, text_key)
    parts = []
    masks = []
    for start in range(0, len(table), BATCH_ROWS):
        try:
            part, mask = _apply_local(op, table.slice(start, BATCH_ROWS), text_key)
        except SampleError as exc:
            if exc.index is not None:
                exc.index += start  # name the sample by its place in the partition
            raise
        parts.append(part)
        masks.append(mask)
    kept = None if masks[0] is None else pa.concat_arrays(masks)
    return pa.concat_tables(parts).combine_chunks(), kept


def _apply_local(op: Op, table: pa.Table, text_key: str) -> tuple[pa.Table, pa.Array | None]:
    if len(table) == 0:
        if isinstance(op, Filter):
            empty = {k: pa.array([], type=t) for k, t in op.stats_types.items()}
            return merge_stats(table, empty), pa.array([], type=pa.bool_())
        return table, None
    if isinstance(op, Mapper):
        return apply_mapper(op, table, text_key), None
    if isinstance(op, Filter):
        return apply_filter(op, table, text_key)
    raise TypeError(f"op {op.name} is not a mapper or filter")
