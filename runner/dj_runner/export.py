"""Export: write the partitions' final tables, in input order, as JSONL or Parquet.

One file, or a directory of shards (``part-NNNNN.<ext>``, one per partition) when the
export path has no file suffix. The export appears atomically: it is written under a
temporary name and renamed into place.
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
from dj_runner.sources import JSON_COLUMN_META


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


def write_jsonl(table: pa.Table, fh: IO[bytes]) -> None:
    json_cols = [
        f.name for f in table.schema if f.metadata and f.metadata.get(JSON_COLUMN_META) == b"1"
    ]
    dumps = json.dumps
    for row in table.to_pylist():
        for c in json_cols:
            if row.get(c) is not None:
                row[c] = json.loads(row[c])
        fh.write((dumps(row, ensure_ascii=False, default=str) + "\n").encode())


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give a table the unified export schema: missing columns null, types promoted."""
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(len(table), f.type))
    table = table.select(schema.names)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.Table.from_pylist(table.to_pylist(), schema=schema)


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
    rows = 0

    if not sharded:

        def write_file(tmp: Path) -> None:
            nonlocal rows
            if fmt == "jsonl":
                with open(tmp, "wb") as fh:
                    for t in tables():
                        t = prepare(t, keep_stats)
                        write_jsonl(t, fh)
                        rows += t.num_rows
                return
            unified = pa.unify_schemas(
                [_prepared_schema(s, keep_stats) for s in schemas], promote_options="permissive"
            )
            with pq.ParquetWriter(tmp, unified) as writer:
                for t in tables():
                    t = _conform(prepare(t, keep_stats), unified)
                    writer.write_table(t)
                    rows += t.num_rows

        write_atomic(target, write_file)
        return rows

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    for i, t in enumerate(tables()):
        t = prepare(t, keep_stats)
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


def _prepared_schema(schema: pa.Schema, keep_stats: bool) -> pa.Schema:
    for name in (HASH_COLUMN, *(() if keep_stats else (STATS_COLUMN,))):
        idx = schema.get_field_index(name)
        if idx >= 0:
            schema = schema.remove(idx)
    return schema
