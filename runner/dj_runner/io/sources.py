"""Input datasets: find the files, stream their records, read back one partition's ranges.

A dataset is a file, a directory (searched recursively) or a glob of ``.jsonl``,
``.jsonl.gz``, ``.jsonl.zst``, ``.json``, ``.parquet``, ``.arrow`` or ``.csv`` files, taken in
sorted order, on the local filesystem or in object storage (``s3://bucket/prefix``: an object,
every object under a prefix, or a glob whose ``*`` stays within one path segment). Where the
bytes come from is ``dj_runner.store.location``'s: S3 objects are streamed with ranged reads,
and a partition is read back from its recorded offset, never by downloading a whole object.
Line formats are addressed by byte ranges of the (decompressed) stream; columnar formats by
row ranges. Records whose fields differ are fine: a missing field is
null.

Malformed records are returned separately, with file and line, so the caller can reject
them. The rule: a line is malformed when it is not valid UTF-8 JSON, is not a JSON object,
holds a lone UTF-16 surrogate anywhere (``"\\ud800"`` or the CESU bytes ``ED A0 80``: no
Arrow string or UTF-8 output can carry one), or when its first text key (the field ops work
on) is missing, null or not a string; the other text keys may be missing or null but, when
set, must be strings. Columnar rows whose first text key is null are malformed too. A file
that cannot be read as its format at all (corrupt or truncated compressed data, a ``.json``
file that is neither one JSON array nor JSON Lines, an unreadable Parquet, Arrow or CSV
file) raises ``InputError`` naming the file, and the line or row where it is known.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from dj_runner.errors import InputError, RecipeError
from dj_runner.io.table_schema import (  # JSON text is a schema concept
    json_text_array,
    json_text_field,
)
from dj_runner.recipe.keys import INPUT_SUFFIXES
from dj_runner.store.location import check_readable, is_s3, resolve, scrub

LINE_FORMATS = ("jsonl", "json")


@dataclass(frozen=True)
class SourceFile:
    """One input file, with what identifies its content for resume checks."""

    path: str
    fmt: str  # jsonl | json | parquet | arrow | csv
    compression: str  # none | gzip | zstd
    size: int
    mtime_ns: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceFile:
        return cls(**d)


@dataclass(frozen=True)
class Malformed:
    """A record that could not be read: where it came from and why."""

    source: str
    line: int
    error: str
    raw: str


def _classify(path: str) -> tuple[str, str]:
    if path.endswith(".jsonl.gz"):
        return "jsonl", "gzip"
    if path.endswith(".jsonl.zst"):
        return "jsonl", "zstd"
    for suffix in (".jsonl", ".json", ".parquet", ".arrow", ".csv"):
        if path.endswith(suffix):
            return suffix[1:], "none"
    raise ValueError(path)


def list_sources(dataset_path: str) -> list[SourceFile]:
    """The dataset's files in a stable, sorted order. Raises RecipeError when there are none."""
    if is_s3(dataset_path):
        return _list_s3(dataset_path)
    if any(ch in dataset_path for ch in "*?["):
        candidates = sorted(glob.glob(dataset_path, recursive=True))
        if not candidates:
            raise RecipeError("dataset_path", dataset_path, "a glob that matches files")
    elif os.path.isdir(dataset_path):
        candidates = sorted(str(p) for p in Path(dataset_path).rglob("*") if p.is_file())
    elif os.path.isfile(dataset_path):
        candidates = [dataset_path]
    else:
        raise RecipeError("dataset_path", dataset_path, "an existing file, directory or glob")
    files = []
    for path in candidates:
        if not any(path.endswith(s) for s in INPUT_SUFFIXES) or not os.path.isfile(path):
            continue
        fmt, comp = _classify(path)
        st = os.stat(path)
        files.append(SourceFile(os.path.abspath(path), fmt, comp, st.st_size, st.st_mtime_ns))
    if not files:
        raise RecipeError(
            "dataset_path", dataset_path, "files ending in " + ", ".join(INPUT_SUFFIXES)
        )
    return files


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over object keys: ``*``/``?`` stay within a segment, ``**`` spans them."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _list_s3(dataset_path: str) -> list[SourceFile]:
    """The objects an ``s3://`` dataset names (every page of the listing), sorted by key."""
    from pyarrow.fs import FileSelector, FileType

    loc = resolve(dataset_path)
    magic = any(ch in dataset_path for ch in "*?[")
    if magic:
        fixed = loc.path[: min(loc.path.index(ch) for ch in "*?[" if ch in loc.path)]
        base = fixed[: fixed.rfind("/") + 1] if "/" in fixed else fixed
        root = resolve("s3://" + base)
        pattern = _glob_regex(loc.path)
    else:
        root, pattern = loc, None
    check_readable("dataset_path", root)
    with _listing(dataset_path):
        info = root.fs.get_file_info(root.path) if not magic else None
        if info is not None and info.type == FileType.File:
            infos = [info]
        else:
            infos = root.fs.get_file_info(
                FileSelector(root.path.rstrip("/"), allow_not_found=True, recursive=True)
            )
    files = []
    for fi in sorted(infos, key=lambda f: f.path):
        if fi.type != FileType.File or not any(fi.path.endswith(s) for s in INPUT_SUFFIXES):
            continue
        if pattern is not None and not pattern.match(fi.path):
            continue
        fmt, comp = _classify(fi.path)
        files.append(SourceFile("s3://" + fi.path, fmt, comp, fi.size, fi.mtime_ns or 0))
    if not files:
        raise RecipeError(
            "dataset_path",
            dataset_path,
            "an s3:// object, prefix or glob holding files ending in " + ", ".join(INPUT_SUFFIXES),
        )
    return files


@contextlib.contextmanager
def _listing(uri: str) -> Iterator[None]:
    """Turn a failed S3 listing into an ``InputError`` naming the URI."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"cannot list {uri}: {scrub(str(exc))}") from exc


def _open_raw(src: SourceFile) -> IO[bytes]:
    """The file's bytes as a seekable binary stream: a local file, or an S3 object read with
    ranged GETs (1 MiB at a time)."""
    if not is_s3(src.path):
        return open(src.path, "rb")
    loc = resolve(src.path)
    native = loc.fs.open_input_file(loc.path)
    return io.BufferedReader(native, buffer_size=1 << 20)  # type: ignore[arg-type]


def _open_columnar(src: SourceFile) -> Any:
    """A columnar file for pyarrow's readers: the path (local) or a random-access S3 object."""
    if not is_s3(src.path):
        return src.path
    loc = resolve(src.path)
    return loc.fs.open_input_file(loc.path)


#: What a broken compressed stream or file raises while it is read.
_READ_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error)


def _zstd_error() -> type[BaseException]:
    import zstandard

    return zstandard.ZstdError


@contextlib.contextmanager
def reading(src: SourceFile, where: str = "") -> Iterator[None]:
    """Turn a read failure of ``src`` into an ``InputError`` naming the file (and where)."""
    try:
        yield
    except InputError:
        raise
    except (*_READ_ERRORS, _zstd_error(), pa.ArrowException, UnicodeDecodeError) as exc:
        what = {"gzip": "gzip-compressed ", "zstd": "zstd-compressed "}.get(src.compression, "")
        raise InputError(
            f"input file {src.path} is not readable as {what}{src.fmt}{where}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def open_binary(src: SourceFile) -> IO[bytes]:
    """Open a line-format file as a decompressed binary stream."""
    if src.compression == "gzip":
        raw = _open_raw(src)
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
        stream.myfileobj = raw  # closed with the stream, as gzip.open arranges for its own file
        return stream  # type: ignore[return-value]
    if src.compression == "zstd":
        return io.BufferedReader(_ZstdReader(_open_raw(src)), buffer_size=1 << 20)
    return _open_raw(src)


class _ZstdReader(io.RawIOBase):
    """A zstd file decompressed frame by frame; a truncated last frame is an ``EOFError``.

    (``zstandard``'s stream reader ends quietly at a truncated frame, which would drop the
    records after the cut without a word.)
    """

    def __init__(self, fh: IO[bytes]) -> None:
        import zstandard

        self._fh = fh
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._dobj = self._new()
        self._in_frame = False
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = self._fh.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd data ended before the end of its frame (truncated)")
                return 0
            out = []
            while chunk:
                self._in_frame = True
                out.append(self._dobj.decompress(chunk))
                if not self._dobj.eof:
                    break
                chunk = self._dobj.unused_data
                self._dobj = self._new()
                self._in_frame = False
            self._pending = memoryview(b"".join(out))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def is_json_array(src: SourceFile) -> bool:
    """A ``.json`` file holding one JSON array (rather than JSON Lines)."""
    if src.fmt != "json":
        return False
    with reading(src), open_binary(src) as fh:
        head = fh.read(4096).lstrip()
    return head.startswith(b"[")


def _json_array_items(src: SourceFile) -> list[Any]:
    with reading(src), open_binary(src) as fh:
        data = fh.read()
    try:
        items = json.loads(data)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        where = f" line {line}" if line else ""
        raise InputError(
            f"input file {src.path}{where}: a .json file must hold one JSON array of records, "
            f"or JSON Lines (one object per line, not starting with '['); {exc}"
        ) from exc
    if not isinstance(items, list):  # pragma: no cover - the head starts with '['
        raise InputError(f"input file {src.path}: not a JSON array")
    return items


def _line_bytes(item: Any) -> bytes:
    # surrogatepass: a lone surrogate in an element reaches parse_lines, which rejects it
    return (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------
# Streaming units for the planner


def iter_lines(src: SourceFile) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(line_no, byte_offset, raw_line)`` for every non-blank line of a line file.

    For a ``.json`` array file, each element is one unit, serialised back to one line;
    ``byte_offset`` is then the element index (such a file is read whole).
    """
    if is_json_array(src):
        for i, item in enumerate(_json_array_items(src)):
            yield i + 1, i, _line_bytes(item)
        return
    offset, line_no = 0, 0
    with open_binary(src) as fh:
        for line in _lines(src, fh, lambda n: f" after line {n}" if n else " in its first lines"):
            line_no += 1
            if line.strip():
                yield line_no, offset, line
            offset += len(line)


#: Bytes read at a time when a line file is split into lines.
LINE_CHUNK = 1 << 22


def _lines(
    src: SourceFile, fh: IO[bytes], where: Callable[[int], str], limit: int | None = None
) -> Iterator[bytes]:
    """The lines of ``fh`` as ``readline`` gives them (each with its newline; the last one
    maybe without), read in large chunks: a file of many short lines costs one read and one
    split a chunk, not a call a line. ``limit``: read about that many bytes (a line that
    crosses it is still given whole). A read error names ``src`` and ``where(n)``, ``n`` the
    lines given so far."""
    given = read = 0
    tail: list[bytes] = []
    while True:
        if limit is not None and read >= limit:
            if not tail:
                break
            size = 1 << 16  # only to finish the line that crosses the limit
        else:
            size = LINE_CHUNK if limit is None else min(LINE_CHUNK, limit - read)
        with reading(src, where(given)):
            chunk = fh.read(size)
        if not chunk:
            break
        read += len(chunk)
        pieces = chunk.split(b"\n")
        last = pieces.pop()
        if pieces:
            if tail:
                pieces[0] = b"".join(tail) + pieces[0]
                tail = []
            for piece in pieces:
                yield piece + b"\n"
            given += len(pieces)
        if last:
            tail.append(last)
    if tail:
        yield b"".join(tail)


def iter_columnar_batches(src: SourceFile, batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
    """Stream a columnar file as record batches."""
    rows = 0
    batches = _columnar_batches(src, batch_rows)
    while True:
        with reading(src, f" after row {rows}" if rows else " at its start"):
            batch = next(batches, None)
        if batch is None:
            return
        rows += batch.num_rows
        yield batch


def _columnar_batches(src: SourceFile, batch_rows: int) -> Iterator[pa.RecordBatch]:
    if src.fmt == "parquet":
        yield from pq.ParquetFile(_open_columnar(src)).iter_batches(batch_size=batch_rows)
    elif src.fmt == "arrow":
        opened = _open_columnar(src)
        with pa.memory_map(opened) if isinstance(opened, str) else opened as source:
            try:
                reader = ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)
            except pa.ArrowInvalid:
                source.seek(0)
                yield from ipc.open_stream(source)
    elif src.fmt == "csv":
        # Every CSV column is read as a string: types inferred per block would differ
        # between partitions and make the output depend on the split.
        with _open_raw(src) as fh:
            header = pacsv.read_csv(
                io.BytesIO(fh.readline()), read_options=pacsv.ReadOptions(block_size=1 << 20)
            ).column_names
        opts = pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()))
        yield from pacsv.open_csv(_open_columnar(src), convert_options=opts)
    else:
        raise ValueError(f"not a columnar format: {src.fmt}")


# ---------------------------------------------------------------------------------------
# Reading one partition back


def read_line_range(
    src: SourceFile, start: int, stop: int, first_line: int
) -> Iterator[tuple[int, bytes]]:
    """Stream ``(line_no, raw_line)`` for the non-blank lines of ``src`` within [start, stop).

    ``first_line`` is the line number at byte ``start``, as the plan recorded it.
    """
    if is_json_array(src):
        for i, item in enumerate(_json_array_items(src)):
            if start <= i < stop:
                yield i + 1, _line_bytes(item)
        return
    with open_binary(src) as fh:
        with reading(src):
            if src.compression == "none":
                fh.seek(start)
            else:
                _skip(fh, start)
        pos, line_no = start, first_line
        for line in _lines(src, fh, lambda n: f" at line {first_line + n}", stop - start):
            if pos >= stop:
                break
            pos += len(line)
            if line.strip():
                yield line_no, line
            line_no += 1


def _skip(fh: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = fh.read(min(n, 1 << 20))
        if not chunk:
            break
        n -= len(chunk)


def read_rows(src: SourceFile, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of a columnar file."""
    with reading(src, f" in rows {start}-{stop}"):
        return _read_rows(src, start, stop)


def _read_rows(src: SourceFile, start: int, stop: int) -> pa.Table:
    if src.fmt == "parquet":
        pf = pq.ParquetFile(_open_columnar(src))
        groups, first, pos = [], None, 0
        for i in range(pf.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if pos + n > start and pos < stop:
                groups.append(i)
                first = pos if first is None else first
            pos += n
        if not groups:
            return pf.schema_arrow.empty_table()
        table = pf.read_row_groups(groups)
        return table.slice(start - first, stop - start)
    batches, pos = [], 0
    schema = None
    for batch in iter_columnar_batches(src):
        schema = batch.schema
        n = batch.num_rows
        if pos + n > start and pos < stop:
            lo = max(start - pos, 0)
            batches.append(batch.slice(lo, min(stop, pos + n) - pos - lo))
        pos += n
        if pos >= stop:
            break
    if not batches:
        return pa.Table.from_batches([], schema=schema) if schema else pa.table({})
    return pa.Table.from_batches(batches)


# ---------------------------------------------------------------------------------------
# Records to Arrow


def parse_lines(
    lines: list[tuple[int, bytes]], source: str, text_keys: tuple[str, ...]
) -> tuple[list[dict[str, Any]], list[Malformed]]:
    """Parse JSON lines into records; collect the malformed ones (see the module's rule)."""
    records: list[dict[str, Any]] = []
    bad: list[Malformed] = []
    loads = json.loads
    text_key = text_keys[0]
    for line_no, raw in lines:
        try:
            rec = loads(raw)
        except ValueError as exc:
            bad.append(Malformed(source, line_no, f"invalid JSON: {exc}", _preview(raw)))
            continue
        error = _record_error(rec, raw, text_key, text_keys)
        if error is not None:
            bad.append(Malformed(source, line_no, error, _preview(raw)))
            continue
        records.append(rec)
    return records, bad


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_CESU_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


def _maybe_surrogate(raw: bytes) -> bool:
    """A cheap test first (substring search), then the exact byte patterns."""
    return bool(
        (b"\\u" in raw and _SURROGATE_ESCAPE.search(raw))
        or (b"\xed" in raw and _CESU_SURROGATE.search(raw))
    )


def _record_error(rec: Any, raw: bytes, text_key: str, text_keys: tuple[str, ...]) -> str | None:
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    # A lone surrogate can only come from a \uD800-\uDFFF escape or CESU bytes (ED A0..BF);
    # the full check runs only on lines that have one of those.
    if _maybe_surrogate(raw) and has_lone_surrogate(rec):
        return "a lone UTF-16 surrogate (not valid Unicode) in a field"
    value = rec.get(text_key)
    if value is None:
        return f"text field '{text_key}' is {'null' if text_key in rec else 'missing'}"
    for key in text_keys:
        value = rec.get(key)
        if value is not None and not isinstance(value, str):
            return f"text field '{key}' is a {type(value).__name__}, not a string"
    return None


def has_lone_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a lone surrogate in any string, key or value."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _preview(raw: bytes, limit: int = 500) -> str:
    return raw[:limit].decode("utf-8", errors="replace").rstrip("\n")


def records_to_table(records: list[dict[str, Any]], text_keys: tuple[str, ...]) -> pa.Table:
    """Build a table from records whose keys may differ; a missing field is null.

    Columns come in order of first appearance, text keys first. Nested values (objects and
    lists) and columns whose values mix JSON types (a number here, a string there; an
    integer here, a float there) are kept as JSON text, marked in the field metadata, so
    that JSONL export writes the original values back exactly.
    """
    names: dict[str, None] = dict.fromkeys(text_keys)
    for rec in records:
        for key in rec:
            if key not in names:
                names[key] = None
    arrays, fields = [], []
    for name in names:
        values = [rec.get(name) for rec in records]
        if name in text_keys:
            arrays.append(pa.array(values, type=pa.string()))
            fields.append(pa.field(name, pa.string()))
            continue
        kinds = {type(v) for v in values if v is not None}
        arr = None
        if len(kinds) <= 1 and not kinds & {dict, list}:
            try:
                arr = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                arr = None
        if arr is not None:
            arrays.append(arr)
            fields.append(pa.field(name, arr.type))
        else:
            arrays.append(json_text_array(values))
            fields.append(json_text_field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def reject_null_text(
    table: pa.Table, text_key: str, source: str, first_row: int
) -> tuple[pa.Table, list[Malformed]]:
    """Split off columnar rows whose text is null, as malformed records (row numbers 1-based)."""
    col = table.column(text_key)
    if col.null_count == 0:
        return table, []
    nulls = pc.is_null(col)
    rows = pc.indices_nonzero(nulls).to_pylist()
    bad = [
        Malformed(source, first_row + i + 1, f"text field '{text_key}' is null", "") for i in rows
    ]
    return table.filter(pc.invert(nulls)), bad


def ensure_text_columns(table: pa.Table, text_keys: tuple[str, ...]) -> pa.Table:
    """Columnar input: add missing text columns as null; cast the present ones to string."""
    for key in text_keys:
        if key not in table.column_names:
            table = table.append_column(
                pa.field(key, pa.string()), pa.nulls(len(table), pa.string())
            )
        elif not pa.types.is_string(table.schema.field(key).type) and not pa.types.is_large_string(
            table.schema.field(key).type
        ):
            raise RecipeError(
                "text_keys",
                key,
                f"a string column; '{key}' is {table.schema.field(key).type} in the input",
            )
    return table
