"""Export: write the partitions' final tables, in input order, as JSONL or Parquet.

One file, or a directory of shards (``part-NNNNN.<ext>``, one per partition) when the
export path has no file suffix. Every partition is conformed to one schema first, so the
export does not depend on how the input was partitioned. A Parquet export gives nested JSON
values (kept as JSON text while processing) their struct or list type. A single-file export
appears atomically (written under a temporary name, then renamed); a directory export is written
beside the target and swapped in with two renames. An export that fails (a full disk: ``NoSpace``,
naming the file or shard) leaves the previous export, or none, and removes what it had written.

The runner only ever deletes what it wrote. A directory export carries a marker file
(``.dj-runner-export``); an existing directory without it that holds anything is refused
(``check_export_target``) before any work, and an owned directory is replaced only while it
holds nothing but the runner's shards.

An ``s3://`` export keeps the same rules without rename (``_S3Export``). An object that an
interrupted upload leaves is never at a final key: every object is first written under a
temporary key (``.dj-runner-tmp-<tag>``), then copied server-side (CopyObject, atomic) to its
final key, and the temporary object is deleted. A killed process leaves at most an incomplete
multipart upload (never visible as an object) or a temporary object. A directory export
(a key prefix) is owned when it holds ``.dj-runner-export`` or ``.dj-runner-export.writing``
and otherwise only shards and temporary objects: the writing marker goes first, the old
marker is removed, the shards are copied in, shards the new export does not have are deleted,
and the marker, naming every shard and its size, is written last. An export reads as complete
exactly when its marker exists. The single-file form is bounded by CopyObject's 5 GiB limit;
larger exports use a directory of shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow.fs import FileSelector, FileType

from dj_runner.errors import RecipeError
from dj_runner.io.table_schema import conform, is_json_text, typed_nested, unify
from dj_runner.ops._native import json_strings
from dj_runner.ops.common.base import HASH_COLUMN, STATS_COLUMN
from dj_runner.store.arrow_json import export_default
from dj_runner.store.atomic import fsync_dir, write_atomic
from dj_runner.store.location import Location, is_s3, resolve
from dj_runner.store.nospace import is_no_space, no_space


def is_sharded(export_path: str) -> bool:
    return not (export_path.endswith(".jsonl") or export_path.endswith(".parquet"))


EXPORT_MARKER = ".dj-runner-export"
_SHARD = re.compile(r"^part-\d{5}\.(jsonl|parquet)$")


def _owned_entries(directory: Path) -> list[Path] | None:
    """The runner's files in ``directory``, or None if it holds anything else / no marker."""
    entries = list(directory.iterdir())
    if not (directory / EXPORT_MARKER).is_file():
        return None
    if any(p.name != EXPORT_MARKER and not (_SHARD.match(p.name) and p.is_file()) for p in entries):
        return None
    return entries


def check_export_target(export_path: str) -> None:
    """Refuse an export that would destroy what the runner did not write (before any work)."""
    if is_s3(export_path):
        _S3Export(export_path).check_target()
        return
    target = Path(export_path).expanduser()
    if is_sharded(export_path):
        if target.exists() and not target.is_dir():
            raise RecipeError("export_path", export_path, "a directory; this path is a file")
        if target.is_dir() and any(target.iterdir()) and _owned_entries(target) is None:
            raise RecipeError(
                "export_path",
                export_path,
                "a new or empty directory, or one this runner exported to before (it holds "
                f"{EXPORT_MARKER} and only part-NNNNN files); this directory holds other files "
                "and the export would replace them",
            )
    elif target.is_dir():
        raise RecipeError("export_path", export_path, "a file path; this path is a directory")


def remove_export(export_path: str) -> None:
    """Remove an earlier export (``--restart``): the file, or an owned directory's shards."""
    if is_s3(export_path):
        _S3Export(export_path).remove()
        return
    target = Path(export_path).expanduser()
    if not is_sharded(export_path):
        if target.is_file():
            target.unlink()
        return
    if target.is_dir() and (target / EXPORT_MARKER).is_file():
        for p in target.iterdir():
            if p.name == EXPORT_MARKER or (_SHARD.match(p.name) and p.is_file()):
                p.unlink()
        if not any(target.iterdir()):
            target.rmdir()


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


def write_jsonl(table: pa.Table, fh: IO[bytes], slice_rows: int = 2048) -> None:
    """Write rows as JSON lines, a slice at a time (Python row objects stay few).

    Each line is what ``json.dumps(row, ensure_ascii=False, default=str)`` gives for the row
    with its JSON-text columns parsed, built column by column: a JSON-text column already holds
    ``json.dumps(value, ensure_ascii=False)`` (same separators), so its text is spliced in as
    is instead of being parsed and dumped again. The lines of a slice are joined by Arrow
    (``binary_join_element_wise``: the keys and each column's encoded values, element-wise),
    and its buffer is written as it is: no Python string a row.
    """
    names = table.column_names
    if not names:  # no columns at all: one empty object per row
        fh.write(b"{}\n" * table.num_rows)
        return
    keys = [json.dumps(name, ensure_ascii=False) + ": " for name in names]
    # what goes before each value: the object's opening or a separator, then the key
    before = [
        pa.scalar(b, pa.large_string()) for b in ("{" + keys[0], *(", " + k for k in keys[1:]))
    ]
    close = pa.scalar("}\n", pa.large_string())
    empty = pa.scalar("", pa.large_string())
    raw = [is_json_text(f) for f in table.schema]
    for start in range(0, table.num_rows, slice_rows):
        part = table.slice(start, slice_rows)
        parts: list[Any] = []
        for b, is_raw, col in zip(before, raw, part.columns, strict=True):
            parts += [b, _encoded(is_raw, col)]
        lines = pc.binary_join_element_wise(*parts, close, empty)
        _, offsets, data = lines.buffers()
        ends = memoryview(offsets).cast("q")  # large_string: int64 offsets
        if data is not None:
            fh.write(memoryview(data)[ends[lines.offset] : ends[lines.offset + len(lines)]])


def _encoded(is_raw: bool, column: pa.ChunkedArray) -> pa.Array:
    """One column's values as ``json.dumps`` writes them inside a row (a text column's in one
    C pass over the column, ``json_strings``), as a ``large_string`` array without nulls."""
    if is_raw or pa.types.is_string(column.type):
        arr = column.combine_chunks()
        quoted = arr if is_raw else json_strings(arr)
        if quoted is not None:
            return quoted.cast(pa.large_string()).fill_null("null")
    dumps = json.dumps
    return pa.array(
        [dumps(v, ensure_ascii=False, default=export_default) for v in column.to_pylist()],
        pa.large_string(),
    )


def write_export(
    export_path: str,
    partitions: Callable[[], Iterator[Iterator[pa.Table]]],
    schemas: list[pa.Schema],
    keep_stats: bool,
) -> int:
    """Write the export. Returns the rows written.

    ``partitions()`` yields, in order, each partition's rows as an iterator of slices, so that
    no more than a slice is held at once.
    """
    sharded = is_sharded(export_path)
    fmt = export_format(export_path, sharded)
    target = Path(export_path)
    unified = unify([_prepared_schema(s, keep_stats) for s in schemas])
    if fmt == "parquet":  # nested JSON values become structs and lists (a pass over them)
        unified = typed_nested(
            unified, (prepare(t, keep_stats) for part in partitions() for t in part)
        )
    rows = 0

    def conformed(slices: Iterator[pa.Table]) -> Iterator[pa.Table]:
        nonlocal rows
        for t in slices:
            t = conform(prepare(t, keep_stats), unified)
            rows += t.num_rows
            yield t

    def write_file(path: Path | Any, slices: Iterator[pa.Table]) -> None:
        """Write to a local path, or to an open binary sink (an S3 output stream)."""
        if fmt == "jsonl":
            with open(path, "wb") if isinstance(path, Path) else contextlib.nullcontext(path) as fh:
                for t in conformed(slices):
                    write_jsonl(t, fh)
            return
        with pq.ParquetWriter(path, unified) as writer:
            for t in conformed(slices):
                writer.write_table(t)

    if is_s3(export_path):
        s3 = _S3Export(export_path)
        if not sharded:
            s3.write_object(lambda sink: write_file(sink, (t for p in partitions() for t in p)))
        else:
            s3.write_shards(
                (lambda sink, part=part: write_file(sink, part) for part in partitions()), fmt
            )
        return rows

    if not sharded:
        write_atomic(
            target, lambda tmp: write_file(tmp, (t for part in partitions() for t in part))
        )
        return rows

    check_export_target(export_path)
    tag = uuid.uuid4().hex
    tmp_dir = target.with_name(f".{target.name}.tmp-{tag}")
    old = target.with_name(f".{target.name}.old-{tag}")
    writing = target  # what a full disk's message names: the shard being written, if any
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir.mkdir()
            for i, part in enumerate(partitions()):
                writing = target / f"part-{i:05d}.{fmt}"
                write_file(tmp_dir / writing.name, part)
            writing = target
            (tmp_dir / EXPORT_MARKER).write_text("written by dj-runner; only part-NNNNN files\n")
            if target.exists():
                os.replace(target, old)  # empty, or only the runner's own files (checked above)
            os.replace(tmp_dir, target)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)  # a failed export gives its space back
    except OSError as exc:
        if is_no_space(exc):  # said once the space is given back, as write_atomic does
            raise no_space(writing, exc) from exc
        raise
    if old.exists():
        shutil.rmtree(old)
    fsync_dir(target.parent)
    return rows


WRITING_MARKER = EXPORT_MARKER + ".writing"
_TMP = ".dj-runner-tmp-"


class _S3Export:
    """An export in object storage: ownership, atomic objects, markers (see the module doc)."""

    def __init__(self, export_path: str) -> None:
        self.export_path = export_path
        self.loc: Location = resolve(export_path, "export_path")
        self.fs = self.loc.fs
        self.prefix = self.loc.path.rstrip("/")

    def _entries(self) -> dict[str, int]:
        """Object names (relative to the prefix) and sizes under the export prefix."""
        infos = self.fs.get_file_info(
            FileSelector(self.prefix, allow_not_found=True, recursive=True)
        )
        return {i.path[len(self.prefix) + 1 :]: i.size for i in infos if i.type == FileType.File}

    def _owned(self, entries: dict[str, int]) -> bool:
        if EXPORT_MARKER not in entries and WRITING_MARKER not in entries:
            return False
        return all(
            n in (EXPORT_MARKER, WRITING_MARKER) or _SHARD.match(n) or n.startswith(_TMP)
            for n in entries
        )

    def check_target(self) -> None:
        if is_sharded(self.export_path):
            if self.fs.get_file_info(self.prefix).type == FileType.File:
                raise RecipeError(
                    "export_path", self.export_path, "a key prefix (directory); this is an object"
                )
            entries = self._entries()
            if entries and not self._owned(entries):
                raise RecipeError(
                    "export_path",
                    self.export_path,
                    "an empty key prefix, or one this runner exported to before (it holds "
                    f"{EXPORT_MARKER} and only part-NNNNN objects); this prefix holds other "
                    "objects and the export would replace them",
                )
        elif self._entries():
            raise RecipeError(
                "export_path", self.export_path, "an object key; this is a prefix holding objects"
            )

    def remove(self) -> None:
        if not is_sharded(self.export_path):
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self.prefix)
            return
        entries = self._entries()
        if entries and self._owned(entries):
            for name in entries:
                self.fs.delete_file(f"{self.prefix}/{name}")

    def _put_atomic(self, final: str, write: Callable[[Any], None], tmp: str) -> int:
        """Write under ``tmp``, copy to ``final`` (atomic), delete ``tmp``; return the size."""
        try:
            with self.fs.open_output_stream(tmp) as sink:
                write(sink)
            self.fs.copy_file(tmp, final)
        finally:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
        return self.fs.get_file_info(final).size

    def write_object(self, write: Callable[[Any], None]) -> None:
        tmp = f"{self.prefix}{_TMP}{uuid.uuid4().hex}"
        self._put_atomic(self.prefix, write, tmp)

    def _put_small(self, name: str, data: bytes) -> None:
        with self.fs.open_output_stream(f"{self.prefix}/{name}") as sink:
            sink.write(data)

    def write_shards(self, writers: Iterator[Callable[[Any], None]], fmt: str) -> None:
        self.check_target()
        before = self._entries()
        self._put_small(WRITING_MARKER, b"an export by dj-runner is being written\n")
        if EXPORT_MARKER in before:
            self.fs.delete_file(f"{self.prefix}/{EXPORT_MARKER}")
        tag = uuid.uuid4().hex
        shards: dict[str, int] = {}
        for i, write in enumerate(writers):
            name = f"part-{i:05d}.{fmt}"
            tmp = f"{self.prefix}/{_TMP}{tag}-{name}"
            shards[name] = self._put_atomic(f"{self.prefix}/{name}", write, tmp)
        for name in before:
            if _SHARD.match(name) and name not in shards:
                self.fs.delete_file(f"{self.prefix}/{name}")
        record = {"written_by": "dj-runner", "shards": shards}
        self._put_small(EXPORT_MARKER, (json.dumps(record, sort_keys=True) + "\n").encode())
        self.fs.delete_file(f"{self.prefix}/{WRITING_MARKER}")
