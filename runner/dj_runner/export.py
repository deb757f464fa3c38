"""Export: write the partitions' final tables, in input order, as JSONL or Parquet.

One file, or a directory of shards (``part-NNNNN.<ext>``, one per partition) when the
export path has no file suffix. Every partition is conformed to one schema first, so the
export does not depend on how the input was partitioned. The export appears atomically:
it is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from dj_runner.atomic import fsync_dir, write_atomic
from dj_runner.ops.base import HASH_COLUMN, STATS_COLUMN
from dj_runner.sources import is_json_text, json_text_array, json_text_field


def is_sharded(export_path: str) -> bool:
    return not (export_path.endswith(".jsonl") or export_path.endswith(".parquet"))


def export_format(export_path: str, sharded: bool) -> str:
    if not sharded:
        return "parquet" if export_path.endswith(".parquet") else "jsonl"
    return "parquet" if export_path.rstrip("/").endswith("parquet") else "jsonl"


def prepare(table: pa.Table, keep_stats: bool) -> pa.Table:
    drop = [HASH_COLUMN] if HASH_COLUMN in table.column_names else []
    if not keep_stats and STATS_COLUMN in table.column_names:
        drop.append(STATS_COLUMN)
    return table.drop_columns(drop) if drop else table


def _prepared_schema(schema: pa.Schema, keep_stats: bool) -> pa.Schema:
    for name in (HASH_COLUMN, *(() if keep_stats else (STATS_COLUMN,))):
        idx = schema.get_field_index(name)
        if idx >= 0:
            schema = schema.remove(idx)
    return schema


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


def write_jsonl(table: pa.Table, fh: IO[bytes], slice_rows: int = 2048) -> None:
    """Write rows as JSON lines, a slice at a time (Python row objects stay few)."""
    json_cols = [f.name for f in table.schema if is_json_text(f)]
    dumps = json.dumps
    for start in range(0, table.num_rows, slice_rows):
        lines = []
        for row in table.slice(start, slice_rows).to_pylist():
            for c in json_cols:
                if row.get(c) is not None:
                    row[c] = json.loads(row[c])
            lines.append(dumps(row, ensure_ascii=False, default=str))
        fh.write(("\n".join(lines) + "\n").encode())


def write_export(
    export_path: str,
    tables: Callable[[], Iterator[pa.Table]],
    schemas: list[pa.Schema],
    keep_stats: bool,
) -> int:
    """Write the export; ``tables()`` yields each partition's table in order. Returns rows."""
    sharded = is_sharded(export_path)
    fmt = export_format(export_path, sharded)
    target = Path(export_path)
    unified = unify([_prepared_schema(s, keep_stats) for s in schemas])
    rows = 0

    def conformed() -> Iterator[pa.Table]:
        for t in tables():
            yield conform(prepare(t, keep_stats), unified)

    if not sharded:

        def write_file(tmp: Path) -> None:
            nonlocal rows
            if fmt == "jsonl":
                with open(tmp, "wb") as fh:
                    for t in conformed():
                        write_jsonl(t, fh)
                        rows += t.num_rows
                return
            with pq.ParquetWriter(tmp, unified) as writer:
                for t in conformed():
                    writer.write_table(t)
                    rows += t.num_rows

        write_atomic(target, write_file)
        return rows

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    for i, t in enumerate(conformed()):
        rows += t.num_rows
        shard = tmp_dir / f"part-{i:05d}.{fmt}"
        if fmt == "jsonl":
            with open(shard, "wb") as fh:
                write_jsonl(t, fh)
        else:
            pq.write_table(t, shard)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp_dir, target)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)
    return rows
