"""Checkpoints: atomic, verified, self-describing snapshots of a partition between ops.

A checkpoint is written whole first (checksummed on the way): locally to a temporary name,
fsynced and renamed; in object storage as one object under a name of its own, never reused.
Only then is a commit record (row count, byte size, SHA-256) appended to the directory's
``commits.jsonl`` log (``Blobs.append``: a fsynced line, or one conditionally created object). A file without a commit record does not exist as far as the runner is
concerned, and a file whose size, checksum or row count disagrees with its record is
discarded and recomputed.

A checkpoint after an op that only selected rows or added small columns (a filter and its
stats, a deduplicator's hashes or decision) is a *selection* of the last full checkpoint, its
base: the file holds the base rows it keeps (``BASE_ROW_COLUMN``) and its own columns, and the
record names the base by file and checksum; reading it reads both (``Lineage`` says which
checkpoints can be one, ``selection_pays``). A mapper followed by another mapper makes a
selection too, its text column *patched*: only the values that differ from the base's. A base is kept as long as a newer checkpoint
selects from it. Unless ``preserve_intermediate_data`` is set, committing a
checkpoint removes the older ones of the same partition: locally at once, in object storage
at the end of the partition's task (``drop_pruned``: one ``DeleteObjects`` for all of them,
off the op chain's way; a crash before it leaves files that no resume picks over a newer
commit and that retention removes). ``partition_store`` opens a
partition's checkpoint directory of the work dir with the recipe's checkpoint settings.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from dj_runner.store.arrow_json import decode_table, encode_table, json_schema
from dj_runner.store.atomic import write_atomic
from dj_runner.store.blobs import Blobs, LocalBlobs, open_blobs
from dj_runner.store.fencing import Fence, fenced
from dj_runner.store.workdir import WorkDir

COMMITS = "commits.jsonl"
ROW_GROUP_ROWS = 2048
#: In a selection checkpoint's file: each row's index in its base checkpoint.
BASE_ROW_COLUMN = "__dj_base_row__"
#: A checkpoint is written as a selection only when its file would hold at most this share of
#: the table's bytes.
SELECTION_MAX_SHARE = 0.5
EXTENSIONS = {"parquet": "parquet", "arrow": "arrow", "jsonl": "jsonl"}


@dataclass(frozen=True, order=True)
class CheckpointKey:
    """Where a partition stands: ``step`` ops applied; ``hashed`` adds the next op's hashes."""

    step: int
    hashed: bool = False

    @property
    def label(self) -> str:
        return f"op{self.step:03d}" + ("-hash" if self.hashed else "")


@dataclass(frozen=True)
class Selection:
    """A selection checkpoint's base (the full checkpoint it keeps rows of: its file and
    checksum) and the columns its file holds, in the table's order (``own``); of those, the
    ``patched`` ones hold only the values that differ from the base's (null elsewhere)."""

    base_file: str
    base_sha256: str
    own: tuple[str, ...]
    patched: tuple[str, ...] = ()


@dataclass(frozen=True)
class Commit:
    key: CheckpointKey
    file: str
    rows: int
    bytes: int
    sha256: str
    fmt: str
    compression: str
    op_name: str | None
    schema_b64: str | None
    selection: Selection | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """The files a reader of this checkpoint needs: its own, and a selection's base."""
        return (self.file,) if self.selection is None else (self.file, self.selection.base_file)

    def to_record(self, fence: Fence | None = None) -> dict[str, Any]:
        return {
            **(fence.record_fields() if fence is not None else {}),
            "step": self.key.step,
            "hashed": self.key.hashed,
            "file": self.file,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "format": self.fmt,
            "compression": self.compression,
            "op_name": self.op_name,
            "schema_b64": self.schema_b64,
            **(
                {}
                if self.selection is None
                else {
                    "base_file": self.selection.base_file,
                    "base_sha256": self.selection.base_sha256,
                    "own_columns": list(self.selection.own),
                    "patched_columns": list(self.selection.patched),
                }
            ),
            "committed_at": time.time(),
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Commit:
        return cls(
            key=CheckpointKey(int(r["step"]), bool(r.get("hashed", False))),
            file=r["file"],
            rows=int(r["rows"]),
            bytes=int(r["bytes"]),
            sha256=r["sha256"],
            fmt=r["format"],
            compression=r["compression"],
            op_name=r.get("op_name"),
            schema_b64=r.get("schema_b64"),
            selection=None
            if r.get("base_file") is None
            else Selection(
                str(r["base_file"]),
                str(r["base_sha256"]),
                tuple(map(str, r["own_columns"])),
                tuple(map(str, r.get("patched_columns", ()))),
            ),
        )


@dataclass(frozen=True)
class Lineage:
    """How a partition's table in memory derives from its last full checkpoint (the base, by
    key): the base rows it holds (``None``: all of them, in order), the columns it does not
    hold as the base has them (``own``), and the columns that differ from the base's in some
    rows only (``patched``: each with the mask of those rows). The op chain updates it after
    each op; ``None`` in its place means the relation is unknown (an op that may change
    anything), and the next checkpoint is written whole."""

    base_key: CheckpointKey
    base_schema: pa.Schema
    rows: pa.Array | None = None
    own: frozenset[str] = frozenset()
    patched: tuple[tuple[str, pa.Array], ...] = ()

    @classmethod
    def of_full(cls, key: CheckpointKey, table: pa.Table) -> Lineage:
        """The lineage of ``table`` just written whole as the checkpoint ``key``."""
        return cls(key, table.schema)

    def changed(self, columns: Iterable[str]) -> Lineage:
        """After an op that rewrote or added ``columns`` and kept every row."""
        names = frozenset(columns)
        patched = tuple((n, m) for n, m in self.patched if n not in names)
        return replace(self, own=self.own | names, patched=patched)

    def rewrote(self, name: str, before: pa.ChunkedArray, after: pa.ChunkedArray) -> Lineage:
        """After an op that rewrote the column ``name`` from ``before`` to ``after`` and kept
        every row: the rows whose value changed differ from the base (a value that became
        null makes the whole column its own: a patch holds no nulls)."""
        if name in self.own:
            return self
        new = after.combine_chunks() if isinstance(after, pa.ChunkedArray) else after
        old = before.combine_chunks() if isinstance(before, pa.ChunkedArray) else before
        if old.type != new.type:
            return self.changed([name])
        diff = pc.not_equal(new, old)  # null where either is
        changed = pc.coalesce(diff, pc.xor(pc.is_valid(new), pc.is_valid(old)))
        if pc.any(pc.and_(changed, pc.is_null(new))).as_py():
            return self.changed([name])
        earlier = dict(self.patched).get(name)
        mask = changed if earlier is None else pc.or_(earlier, changed)
        patched = tuple((n, m) for n, m in self.patched if n != name)
        return replace(self, patched=(*patched, (name, mask)))

    def kept(self, mask: pa.Array, dropped: Iterable[str] = ()) -> Lineage:
        """After an op that kept the rows of ``mask`` (and dropped the columns ``dropped``)."""
        rows = pc.indices_nonzero(mask) if self.rows is None else self.rows.filter(mask)
        gone = frozenset(dropped)
        patched = tuple((n, m.filter(mask)) for n, m in self.patched if n not in gone)
        return replace(self, rows=rows.cast(pa.uint32()), own=self.own - gone, patched=patched)

    def base_rows(self, num_rows: int) -> pa.Array:
        """Each row's index in the base (``num_rows``: the rows in memory)."""
        if self.rows is not None:
            return self.rows
        return pa.array(range(num_rows), type=pa.uint32())


def selection_pays(lineage: Lineage | None, table: pa.Table) -> bool:
    """Whether ``table`` (of ``lineage``) is written as a selection of its base: every column
    not its own is the base's, of the same type, and what its file would hold (its own
    columns, the changed values of the patched ones) is a small share of the table."""
    if lineage is None or BASE_ROW_COLUMN in table.column_names:
        return False
    base = lineage.base_schema
    patched = dict(lineage.patched)
    own_bytes = 0.0
    for name in table.column_names:
        column = table.column(name)
        if name in lineage.own:
            own_bytes += column.nbytes
            continue
        if base.get_field_index(name) < 0 or base.field(name).type != column.type:
            return False
        mask = patched.get(name)
        if mask is not None and len(mask):
            share = (pc.sum(mask).as_py() or 0) / len(mask)
            own_bytes += column.nbytes * share
    return own_bytes <= SELECTION_MAX_SHARE * max(1, table.nbytes)


#: Checkpoint files in a bucket this process has deleted (so that none is deleted twice).
_pruned: set[str] = set()

#: In a bucket, the bytes of checkpoints verified for a reader that comes next (the export
#: after the final checkpoints' check), by URI and checksum, up to this many bytes in all.
HELD_BYTES_MAX = 128 * 1024 * 1024
_held: dict[tuple[str, str], bytes] = {}
_held_lock = threading.Lock()


def _hold(where: str, sha256: str, data: bytes) -> None:
    with _held_lock:
        if sum(map(len, _held.values())) + len(data) <= HELD_BYTES_MAX:
            _held[(where, sha256)] = data


def _take_held(where: str, sha256: str) -> bytes | None:
    with _held_lock:
        return _held.pop((where, sha256), None)


def release_held() -> None:
    """Drop every checkpoint's bytes ``verify(hold=True)`` kept (the reader is done, or gone)."""
    with _held_lock:
        _held.clear()


class InvalidCheckpoint(Exception):
    """A committed checkpoint failed verification (missing, torn, truncated or altered)."""


class MissingCheckpoint(InvalidCheckpoint):
    """A committed checkpoint's file is gone."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def _schema_from_b64(text: str) -> pa.Schema:
    return ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


class HashingWriter(io.RawIOBase):
    """A write-only file that passes bytes through to ``fh`` and hashes them on the way."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        self.fh.write(view)
        return view.nbytes


def write_table(sink: BinaryIO, table: pa.Table, fmt: str, compression: str) -> None:
    """Write ``table`` to the file object ``sink`` as a checkpoint file of format ``fmt``."""
    comp = None if compression == "none" else compression
    if fmt == "parquet":
        # Small row groups keep a streaming reader's buffers small. No column statistics:
        # nothing reads them, and they cost time on every write.
        pq.write_table(
            table,
            sink,
            compression=comp or "none",
            row_group_size=ROW_GROUP_ROWS,
            write_statistics=False,
        )
    elif fmt == "arrow":
        with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(compression=comp)) as w:
            w.write_table(table)
    elif fmt == "jsonl":
        import gzip

        out: BinaryIO = gzip.GzipFile(fileobj=sink, mode="wb") if comp == "gzip" else sink
        # Lossless: binary, temporal and decimal values in their JSON form (arrow_json), the
        # schema that restores them goes with the commit record.
        for row in encode_table(table).to_pylist():
            out.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
        if out is not sink:
            out.close()
    else:
        raise ValueError(fmt)


def restore_types(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast columns Parquet gave back in a wider form to the types they were written with."""
    fields = [
        schema.field(n) if schema.get_field_index(n) >= 0 else None for n in table.column_names
    ]
    if all(f is None or f.type == t.type for f, t in zip(fields, table.schema, strict=True)):
        return table
    target = pa.schema(
        [f if f is not None else t for f, t in zip(fields, table.schema, strict=True)],
        metadata=table.schema.metadata,
    )
    return table.cast(target)


#: A checkpoint's bytes to read: a local file, or the object's bytes already fetched.
Source = Path | bytes


def _arrow_input(source: Source) -> Any:
    return pa.BufferReader(source) if isinstance(source, bytes) else str(source)


def read_table(
    path: Source,
    fmt: str,
    compression: str,
    schema: pa.Schema | None,
    columns: list[str] | None = None,
) -> pa.Table:
    if fmt == "parquet":
        # One file: ``ParquetFile`` reads it as ``pq.read_table`` does (the same table and
        # schema), without importing ``pyarrow.dataset`` (tens of ms on every start).
        with pq.ParquetFile(_arrow_input(path)) as pf:
            table = pf.read(columns=columns)
        if schema is not None:
            table = restore_types(table, schema)
        return table
    if fmt == "arrow":
        if isinstance(path, bytes):
            table = ipc.open_file(pa.BufferReader(path)).read_all()
        else:
            with pa.memory_map(str(path)) as src:
                table = ipc.open_file(src).read_all()
        return table.select(columns) if columns else table
    import gzip

    raw: BinaryIO = io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb")
    with gzip.GzipFile(fileobj=raw, mode="rb") if compression == "gzip" else raw as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    raw.close()
    if schema is None:
        table = pa.Table.from_pylist(rows)
    else:
        table = decode_table(pa.Table.from_pylist(rows, schema=json_schema(schema)), schema)
    return table.select(columns) if columns else table


class CheckpointDir:
    """The checkpoints of one partition (or of one global op), in one directory or prefix."""

    def __init__(
        self,
        directory: str | Path | Blobs,
        fmt: str,
        compression: str,
        preserve: bool = False,
        fence: Fence | None = None,
    ):
        self.blobs = directory if isinstance(directory, Blobs) else open_blobs(directory)
        self.fmt = fmt
        self.compression = compression
        self.preserve = preserve
        self.fence = fence
        #: Commit records (file, commit time) whose file this object has deleted locally:
        #: each prune then deletes only what the records since add, not every older file again.
        self._deleted: set[tuple[str, Any]] = set()
        #: Files pruned but not deleted yet (in a bucket, until ``drop_pruned``).
        self._doomed: list[str] = []
        #: The file columns of the selection checkpoint read whole last: (file, SHA-256, table).
        self._last_part: tuple[str, str, pa.Table] | None = None

    @property
    def dir(self) -> Path:
        """The local directory (a TypeError in object storage)."""
        return _local(self.blobs).root

    @property
    def commits_path(self) -> Path:
        return self.dir / COMMITS

    def show(self, name: str) -> str:
        """A checkpoint file's path or URI, as events and messages name it."""
        return self.blobs.join(name)

    def commits(self) -> list[Commit]:
        """Every commit record that counts, oldest first.

        With a fence, records of another plan and late records of a superseded run are
        ignored (``fencing.fenced``). A record of the wrong shape is skipped like a torn line.
        """
        records = self.blobs.records(COMMITS)
        if self.fence is not None:
            records = fenced(records, self.fence.plan_id)
        out = []
        for r in records:
            try:
                out.append(Commit.from_record(r))
            except (KeyError, ValueError, TypeError):
                continue
        return out

    def newest_key(self) -> CheckpointKey | None:
        """The newest committed key, without verifying its file."""
        commits = self.commits()
        return max((c.key for c in commits), default=None)

    def clean_temporaries(self) -> None:
        """Remove files left half-written by a crash (object storage leaves none: an upload
        that did not complete is no object)."""
        if self.blobs.is_local and self.dir.exists():
            for p in self.dir.glob(".*.tmp-*"):
                p.unlink(missing_ok=True)

    def _file_name(self, key: CheckpointKey) -> str:
        ext = EXTENSIONS[self.fmt]
        if self.blobs.is_local:
            return f"{key.label}.{ext}"
        # In object storage a name is never written twice: a superseded writer's late upload
        # cannot replace the bytes a commit record of a newer run vouches for.
        return f"{key.label}-{uuid.uuid4().hex[:12]}.{ext}"

    def save(
        self,
        key: CheckpointKey,
        table: pa.Table,
        op_name: str | None,
        base: tuple[Commit, Lineage] | None = None,
    ) -> Commit:
        """Write the file whole, then commit it; finally prune older checkpoints.

        With ``base`` (a full checkpoint and how ``table`` derives from it, which
        ``selection_pays`` approved) the file holds only the base rows and the own columns.
        """
        if self.fence is not None and self.blobs.is_local:
            self.fence.check_current()  # (in a bucket each check is a request: once, below)
        name = self._file_name(key)
        selection = None
        data = table
        if base is not None:
            base_commit, lineage = base
            patches = dict(lineage.patched)
            own = tuple(n for n in table.column_names if n in lineage.own or n in patches)
            patched = tuple(n for n in own if n not in lineage.own)
            selection = Selection(base_commit.file, base_commit.sha256, own, patched)
            columns = [
                pc.if_else(patches[n], table.column(n), pa.scalar(None, table.column(n).type))
                if n in patched
                else table.column(n)
                for n in own
            ]
            data = pa.table(
                [*columns, lineage.base_rows(table.num_rows)], names=[*own, BASE_ROW_COLUMN]
            )
        return self._commit(key, name, data, table.num_rows, table.schema, op_name, selection)

    def select(
        self,
        commit: Commit,
        mask: pa.Array,
        key: CheckpointKey,
        op_name: str | None,
        drop: Iterable[str] = (),
    ) -> Commit:
        """Commit ``key`` as the rows of the committed checkpoint ``commit`` that ``mask``
        keeps, without the columns ``drop``, from ``commit``'s own file alone: a selection of
        its base (of ``commit`` itself when it is a full checkpoint), whose rows are not read.
        What a global op's decision does to a partition's hashed checkpoint."""
        if self.fence is not None and self.blobs.is_local:
            self.fence.check_current()
        if len(mask) != commit.rows or mask.null_count:
            raise ValueError(f"{commit.file}: a mask of {len(mask)} values for {commit.rows} rows")
        if not commit.schema_b64:
            raise InvalidCheckpoint(f"{commit.file}: no schema in its commit record")
        gone = frozenset(drop)
        whole = _schema_from_b64(commit.schema_b64)
        schema = pa.schema([f for f in whole if f.name not in gone], whole.metadata)
        if commit.selection is None:
            selection = Selection(commit.file, commit.sha256, ())
            self._verify_file(commit, hold=False)  # it becomes a base: it must be sound
            data = pa.table({BASE_ROW_COLUMN: pc.indices_nonzero(mask).cast(pa.uint32())})
        else:
            sel = commit.selection
            own = tuple(n for n in sel.own if n not in gone)
            patched = tuple(n for n in sel.patched if n not in gone)
            selection = Selection(sel.base_file, sel.base_sha256, own, patched)
            self._base(commit)  # its base's record is there (its bytes are checked by readers)
            source = self.verify(commit, base=False)
            data = self._selection_part(commit, source, [*own, BASE_ROW_COLUMN]).filter(mask)
        rows = data.num_rows
        return self._commit(key, self._file_name(key), data, rows, schema, op_name, selection)

    def _commit(
        self,
        key: CheckpointKey,
        name: str,
        data: pa.Table,
        rows: int,
        schema: pa.Schema,
        op_name: str | None,
        selection: Selection | None,
    ) -> Commit:
        """Write ``data`` as the file ``name``, then commit it as ``key`` (a table of ``rows``
        rows and ``schema``); finally prune older checkpoints."""
        # The checksum is taken from the bytes as they are written, not from a re-read.
        if self.blobs.is_local:
            written: list[HashingWriter] = []

            def write(tmp: Path) -> None:
                with open(tmp, "wb") as fh:
                    sink = HashingWriter(fh)
                    write_table(sink, data, self.fmt, self.compression)
                    written.append(sink)

            write_atomic(self.dir / name, write)
            sink = written[0]
        else:
            buf = io.BytesIO()
            sink = HashingWriter(buf)
            write_table(sink, data, self.fmt, self.compression)
            self.blobs.write(name, buf.getvalue())
        commit = Commit(
            key=key,
            file=name,
            rows=rows,
            bytes=sink.size,
            sha256=sink.sha256.hexdigest(),
            fmt=self.fmt,
            compression=self.compression,
            op_name=op_name,
            # Kept for every format: JSONL needs it to restore types, and Parquet stores some
            # types in a wider form (timestamp[s] as [ms], date64 as date32) that it restores.
            # A selection's is the whole table's, as its reader gives it back.
            schema_b64=_schema_b64(schema),
            selection=selection,
        )
        if self.fence is not None:
            self.fence.check_current()  # a newer run claimed the work dir meanwhile: stop
        self.blobs.append(COMMITS, commit.to_record(self.fence))
        if not self.preserve:
            self.prune(keep=key, base=None if selection is None else selection.base_file)
        return commit

    def prune(self, keep: CheckpointKey, base: str | None = None) -> None:
        """Delete the files of every checkpoint older than ``keep`` but the file ``base`` (the
        base ``keep`` selects from): each once (in a bucket the commits as last seen, without
        a listing, no file deleted twice, and there only marked, for ``drop_pruned``; locally
        no commit's file deleted twice by this object)."""
        records = self.blobs.known_records(COMMITS)
        if self.fence is not None:
            records = fenced(records, self.fence.plan_id)
        for r in records:
            try:
                c = Commit.from_record(r)
            except (KeyError, ValueError, TypeError):
                continue
            if c.key >= keep or c.file == base:
                continue
            if self.blobs.is_local:
                done = (c.file, r.get("committed_at"))
                if done not in self._deleted:
                    self.blobs.delete(c.file)
                    self._deleted.add(done)
                continue
            where = self.show(c.file)
            if where not in _pruned:
                _pruned.add(where)
                self._doomed.append(c.file)

    def drop_pruned(self) -> None:
        """Delete the files ``prune`` marked in a bucket: one request for all of them."""
        doomed, self._doomed = self._doomed, []
        if doomed:
            self.blobs.delete_many(doomed)

    def delete(self, commit: Commit) -> None:
        """Delete a checkpoint's file (its record stays; it no longer verifies)."""
        self.blobs.delete(commit.file)

    def verify(self, commit: Commit, hold: bool = False, base: bool = True) -> Source:
        """Check a committed file against its record, and a selection's base against its own;
        raise InvalidCheckpoint if either differs.

        Returns what to read it from: the local file, or the object's bytes (fetched once).
        ``hold``: in a bucket, keep the verified bytes for the next ``iter_slices(verified=
        True)`` of the same checkpoint in this process (up to ``HELD_BYTES_MAX`` in all; a
        selection's base is kept so for the read that follows, whatever ``hold``). ``base``:
        False when only a selection's own columns will be read.
        """
        source = self._verify_file(commit, hold)
        if commit.selection is not None and base:
            try:
                self._verify_file(self._base(commit), hold=True)
            except InvalidCheckpoint as exc:
                # Not a MissingCheckpoint: a base is not pruned while a selection needs it.
                raise InvalidCheckpoint(f"{commit.file}: its base {exc}") from exc
        return source

    def _verify_file(self, commit: Commit, hold: bool) -> Source:
        """``verify`` of one file."""
        if self.blobs.is_local:
            path = self.dir / commit.file
            try:
                size = path.stat().st_size
            except FileNotFoundError as exc:
                raise MissingCheckpoint(f"{commit.file}: missing") from exc
            if size != commit.bytes:
                raise InvalidCheckpoint(f"{commit.file}: {size} bytes, commit says {commit.bytes}")
            digest = sha256_file(path)
            source: Source = path
        else:
            data = self.blobs.read(commit.file)
            if data is None:
                raise MissingCheckpoint(f"{commit.file}: missing")
            if len(data) != commit.bytes:
                raise InvalidCheckpoint(
                    f"{commit.file}: {len(data)} bytes, commit says {commit.bytes}"
                )
            digest = hashlib.sha256(data).hexdigest()
            source = data
        if digest != commit.sha256:
            raise InvalidCheckpoint(
                f"{commit.file}: checksum {digest[:12]} != {commit.sha256[:12]}"
            )
        if hold and isinstance(source, bytes):
            _hold(self.show(commit.file), commit.sha256, source)
        return source

    def load(self, commit: Commit, columns: list[str] | None = None) -> pa.Table:
        """Verify and read a committed checkpoint (only ``columns``, if given)."""
        sel = commit.selection
        base = sel is not None and (
            columns is None or any(c not in sel.own or c in sel.patched for c in columns)
        )
        return self._read(commit, self.verify(commit, base=base), columns)

    def _read(self, commit: Commit, source: Source, columns: list[str] | None = None) -> pa.Table:
        """Read a verified checkpoint from ``source``, checking its row count."""
        if commit.selection is not None:
            return self._read_selection(commit, source, columns)
        schema = _schema_from_b64(commit.schema_b64) if commit.schema_b64 else None
        try:
            table = read_table(source, commit.fmt, commit.compression, schema, columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidCheckpoint(f"{commit.file}: unreadable ({exc})") from exc
        if table.num_rows != commit.rows:
            raise InvalidCheckpoint(
                f"{commit.file}: {table.num_rows} rows, commit says {commit.rows}"
            )
        return table

    def _base(self, commit: Commit) -> Commit:
        """The full checkpoint a selection checkpoint selects from (its newest record)."""
        assert commit.selection is not None
        found = None
        for c in self.commits():
            if c.file == commit.selection.base_file and c.sha256 == commit.selection.base_sha256:
                found = c
        if found is None or found.selection is not None:
            raise InvalidCheckpoint(
                f"{commit.file}: its base {commit.selection.base_file} has no commit record"
            )
        return found

    def _selection_part(self, commit: Commit, source: Source, columns: list[str]) -> pa.Table:
        """A selection checkpoint file's ``columns`` (own columns and ``BASE_ROW_COLUMN``),
        its row count checked."""
        assert commit.selection is not None
        if not commit.schema_b64:
            raise InvalidCheckpoint(f"{commit.file}: a selection without its schema")
        schema = _schema_from_b64(commit.schema_b64)
        fields = [schema.field(n) for n in commit.selection.own]
        part_schema = pa.schema([*fields, pa.field(BASE_ROW_COLUMN, pa.uint32())])
        try:
            part = read_table(source, commit.fmt, commit.compression, part_schema, columns)
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            raise InvalidCheckpoint(f"{commit.file}: unreadable ({exc})") from exc
        if part.num_rows != commit.rows:
            raise InvalidCheckpoint(
                f"{commit.file}: {part.num_rows} rows, commit says {commit.rows}"
            )
        return part

    def _read_selection(
        self, commit: Commit, source: Source, columns: list[str] | None
    ) -> pa.Table:
        """A selection checkpoint's table: its own columns from its file, every other column
        from its base (verified and read here) at the rows its file names."""
        assert commit.selection is not None
        own = commit.selection.own
        if not commit.schema_b64:
            raise InvalidCheckpoint(f"{commit.file}: a selection without its schema")
        schema = _schema_from_b64(commit.schema_b64)
        wanted = schema.names if columns is None else list(columns)
        part = self._selection_part(
            commit, source, [*(n for n in own if n in wanted), BASE_ROW_COLUMN]
        )
        if columns is None:  # kept for ``lineage_of``, which would otherwise read it again
            self._last_part = (commit.file, commit.sha256, part)
        patched = commit.selection.patched
        from_base = [n for n in wanted if n not in own or n in patched]
        taken = None
        if from_base:
            # The base was verified with the selection (``verify``): locally it is read from
            # its file, in a bucket from the bytes that kept, if it could.
            base = self._base(commit)
            held = None if self.blobs.is_local else _take_held(self.show(base.file), base.sha256)
            try:
                if self.blobs.is_local:
                    table = self._read(base, self.dir / base.file, from_base)
                elif held is not None:
                    table = self._read(base, held, from_base)
                else:
                    table = self.load(base, from_base)
            except InvalidCheckpoint as exc:
                raise InvalidCheckpoint(f"{commit.file}: its base {exc}") from exc
            rows = part.column(BASE_ROW_COLUMN)
            if rows.null_count or (len(rows) and pc.max(rows).as_py() >= table.num_rows):
                raise InvalidCheckpoint(f"{commit.file}: rows beyond its base {base.file}")
            taken = table.take(rows)
        arrays = [
            taken.column(n)
            if n not in own
            else pc.coalesce(part.column(n), taken.column(n))
            if n in patched
            else part.column(n)
            for n in wanted
        ]
        try:
            return pa.Table.from_arrays(
                arrays, schema=pa.schema([schema.field(n) for n in wanted], schema.metadata)
            )
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidCheckpoint(f"{commit.file}: does not fit its base ({exc})") from exc

    def lineage_of(self, commit: Commit, table: pa.Table) -> tuple[Commit, Lineage] | None:
        """For a partition resumed from ``commit`` (whose table is ``table``): the full
        checkpoint its next selections select from, and how ``table`` derives from it (None:
        the next checkpoint is written whole)."""
        if commit.selection is None:
            return commit, Lineage.of_full(commit.key, table)
        base = self._base(commit)
        if not base.schema_b64:
            return None
        patched = commit.selection.patched
        last = self._last_part
        if last is not None and last[:2] == (commit.file, commit.sha256):
            part = last[2]  # (read by the load this resume made)
        else:
            source = self.verify(commit, base=False)
            part = self._selection_part(commit, source, [*patched, BASE_ROW_COLUMN])
        rows = part.column(BASE_ROW_COLUMN).combine_chunks()
        own = frozenset(commit.selection.own) - frozenset(patched)
        masks = tuple((n, pc.is_valid(part.column(n).combine_chunks())) for n in patched)
        return base, Lineage(base.key, _schema_from_b64(base.schema_b64), rows, own, masks)

    def iter_slices(
        self, commit: Commit, rows: int = ROW_GROUP_ROWS, verified: bool = False
    ) -> Iterator[pa.Table]:
        """Stream a committed checkpoint in slices of about ``rows`` rows.

        It is verified first, unless the caller has just ``verified`` it: locally it is read
        from its file; in a bucket from the bytes ``verify(hold=True)`` kept, if it could.
        """
        held = None if self.blobs.is_local else _take_held(self.show(commit.file), commit.sha256)
        source: Source
        if verified and self.blobs.is_local:
            source = self.dir / commit.file
        elif verified and held is not None:
            source = held
        else:
            source = self.verify(commit)
        if commit.selection is not None:  # its rows are known only with its base's
            table = self._read(commit, source)
            for start in range(0, table.num_rows, rows):
                yield table.slice(start, rows)
            return
        if commit.fmt == "parquet":
            pf = pq.ParquetFile(_arrow_input(source))
            schema = pf.schema_arrow
            written = _schema_from_b64(commit.schema_b64) if commit.schema_b64 else None
            for batch in pf.iter_batches(batch_size=rows, use_threads=False):
                table = pa.Table.from_batches([batch], schema=schema)
                yield table if written is None else restore_types(table, written)
            return
        # A local file is read again, verified; a bucket's bytes here are verified already.
        table = self.load(commit) if self.blobs.is_local else self._read(commit, source)
        for start in range(0, table.num_rows, rows):
            yield table.slice(start, rows)

    def schema(self, commit: Commit) -> pa.Schema:
        """A committed checkpoint's schema, read without loading its data."""
        if commit.schema_b64:
            return _schema_from_b64(commit.schema_b64)
        source = self.verify(commit)
        if commit.fmt == "parquet":
            return pq.read_schema(_arrow_input(source))
        if isinstance(source, bytes):
            return ipc.open_file(pa.BufferReader(source)).schema
        with pa.memory_map(str(source)) as src:
            return ipc.open_file(src).schema

    def newest_valid(
        self, at_most: CheckpointKey | None = None, on_invalid: Any = None
    ) -> tuple[Commit, pa.Table] | None:
        """The newest checkpoint (not beyond ``at_most``) that verifies, with its table.

        Invalid ones are deleted and reported through ``on_invalid(commit, reason)``, except
        a missing file behind a newer checkpoint tried first: pruning deleted it on purpose.
        """
        seen: set[CheckpointKey] = set()
        # Records are appended in time order; for one key only the newest record counts.
        newest_first = sorted(reversed(self.commits()), key=lambda c: c.key, reverse=True)
        for commit in newest_first:
            if commit.key in seen or (at_most is not None and commit.key > at_most):
                continue
            seen.add(commit.key)
            try:
                return commit, self.load(commit)
            except InvalidCheckpoint as exc:
                pruned = isinstance(exc, MissingCheckpoint) and len(seen) > 1
                if on_invalid is not None and not pruned:
                    on_invalid(commit, str(exc))
                self.delete(commit)
        return None

    def latest_commit(self, key: CheckpointKey) -> Commit | None:
        """The newest commit record for exactly ``key``."""
        found = None
        for c in self.commits():
            if c.key == key:
                found = c
        return found


def _local(blobs: Blobs) -> LocalBlobs:
    if not isinstance(blobs, LocalBlobs):
        raise TypeError(f"{blobs.uri} is not a local directory")
    return blobs


class CheckpointSettings(Protocol):
    """The recipe's checkpoint settings a partition's store needs (``recipe.checkpoint``)."""

    @property
    def storage_format(self) -> str: ...
    @property
    def compression(self) -> str: ...
    @property
    def preserve_intermediate_data(self) -> bool: ...


def partition_store(
    work: WorkDir, pid: int, settings: CheckpointSettings, fence: Fence | None = None
) -> CheckpointDir:
    """Partition ``pid``'s checkpoints in ``work``; with ``fence``, writes carry the run's claim."""
    return CheckpointDir(
        work.show(work.checkpoint_key(pid)),
        settings.storage_format,
        settings.compression,
        settings.preserve_intermediate_data,
        fence,
    )
