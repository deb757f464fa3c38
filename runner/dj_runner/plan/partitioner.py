"""The partition plan: cut the input into partitions once, persist it, reuse it verbatim.

The planner streams the input and never holds more than one partition. A partition
closes when it reaches the sample bound or the size bound, whichever comes first. Each
partition records its source ranges, row count and a content hash. On resume the plan is
read back, never recomputed, so a resume cannot re-split differently.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dj_runner.io.sources import (
    LINE_FORMATS,
    SourceFile,
    is_json_array,
    iter_columnar_batches,
    iter_lines,
    open_binary,
    read_rows,
)
from dj_runner.recipe.parse import PartitionConfig

PLAN_VERSION = 1
AUTO_SAMPLE_UNITS = 1000


@dataclass(frozen=True)
class SourceRange:
    """A contiguous piece of one source file: bytes (line formats) or rows (columnar)."""

    file: int  # index into Plan.sources
    start: int
    stop: int
    first_line: int  # line number at ``start`` (line formats), else 0
    rows: int
    digest: str  # content hash of this range


@dataclass(frozen=True)
class PartitionPlan:
    pid: int
    ranges: tuple[SourceRange, ...]
    rows: int
    bytes: int
    content_hash: str


@dataclass(frozen=True)
class Plan:
    sources: tuple[SourceFile, ...]
    partitions: tuple[PartitionPlan, ...]
    rows_bound: int
    mb_bound: float
    mode: str

    @property
    def total_rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "mode": self.mode,
            "rows_bound": self.rows_bound,
            "mb_bound": self.mb_bound,
            "sources": [s.to_dict() for s in self.sources],
            "partitions": [
                {
                    "pid": p.pid,
                    "rows": p.rows,
                    "bytes": p.bytes,
                    "content_hash": p.content_hash,
                    "ranges": [r.__dict__ for r in p.ranges],
                }
                for p in self.partitions
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        if d.get("version") != PLAN_VERSION:
            raise ValueError(f"unsupported plan version {d.get('version')}")
        return cls(
            sources=tuple(SourceFile.from_dict(s) for s in d["sources"]),
            partitions=tuple(
                PartitionPlan(
                    pid=p["pid"],
                    ranges=tuple(SourceRange(**r) for r in p["ranges"]),
                    rows=p["rows"],
                    bytes=p["bytes"],
                    content_hash=p["content_hash"],
                )
                for p in d["partitions"]
            ),
            rows_bound=d["rows_bound"],
            mb_bound=d["mb_bound"],
            mode=d["mode"],
        )


# ---------------------------------------------------------------------------------------


def _count_units(src: SourceFile) -> int:
    """A fast count of records: newlines for line formats, metadata for columnar ones."""
    if src.fmt in LINE_FORMATS:
        n, last = 0, b"\n"
        with open_binary(src) as fh:
            while chunk := fh.read(1 << 22):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        return n + (0 if last == b"\n" else 1)
    if src.fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(src.path).metadata.num_rows
    return sum(b.num_rows for b in iter_columnar_batches(src))


def _sample_bytes_per_row(sources: tuple[SourceFile, ...]) -> float:
    total, n = 0, 0
    for src in sources:
        if src.fmt in LINE_FORMATS:
            for _, _, line in iter_lines(src):
                total += len(line)
                n += 1
                if n >= AUTO_SAMPLE_UNITS:
                    return total / n
        else:
            for batch in iter_columnar_batches(src):
                total += batch.nbytes
                n += batch.num_rows
                if n >= AUTO_SAMPLE_UNITS:
                    return total / n
    return total / n if n else 1.0


def choose_rows_bound(
    config: PartitionConfig, sources: tuple[SourceFile, ...], cpus: int
) -> tuple[int, float]:
    """The (samples, MB) bounds of a partition for the configured mode.

    - ``size``: the recipe's ``partition_size`` and ``max_partition_size_mb``.
    - ``manual``: ``num_of_partitions`` equal slices of a counted total.
    - ``auto``: enough partitions to give every CPU two, capped by ``partition_size``, and
      by as many samples as fit the MB bound at the sampled size per sample.
    """
    if config.mode == "size":
        return config.partition_size, config.max_size_mb
    total = sum(_count_units(s) for s in sources)
    if config.mode == "manual":
        assert config.num_partitions is not None
        return max(1, math.ceil(total / config.num_partitions)), config.max_size_mb
    per_row = _sample_bytes_per_row(sources)
    by_cpu = math.ceil(total / max(1, 2 * cpus))
    by_mb = int(config.max_size_mb * 1024 * 1024 / max(per_row, 1.0))
    return max(1, min(config.partition_size, by_cpu, by_mb)), config.max_size_mb


class _Cutter:
    """Accumulates units into partitions and closes them at the bounds."""

    def __init__(self, rows_bound: int, mb_bound: float):
        self.rows_bound = rows_bound
        self.max_bytes = int(mb_bound * 1024 * 1024)
        self.partitions: list[PartitionPlan] = []
        self._ranges: list[SourceRange] = []
        self._rows = 0
        self._bytes = 0
        # the open range in the current file
        self._file = -1
        self._start = self._stop = self._first_line = self._range_rows = 0
        self._range_hash = hashlib.blake2b(digest_size=16)

    @property
    def rows(self) -> int:
        """Rows in the open partition."""
        return self._rows

    @property
    def nbytes(self) -> int:
        """Bytes in the open partition, as the MB bound measures them."""
        return self._bytes

    def full_for(self, nbytes: int) -> bool:
        return self._rows > 0 and (
            self._rows >= self.rows_bound or self._bytes + nbytes > self.max_bytes
        )

    def add(self, file: int, start: int, stop: int, line: int, rows: int, nbytes: int) -> None:
        if file != self._file or start != self._stop or self._range_rows == 0:
            self._flush_range()
            self._file, self._start, self._first_line = file, start, line
        self._stop = stop
        self._range_rows += rows
        self._rows += rows
        self._bytes += nbytes

    def hash_update(self, data: bytes) -> None:
        self._range_hash.update(data)

    def _flush_range(self) -> None:
        if self._range_rows:
            self._ranges.append(
                SourceRange(
                    self._file,
                    self._start,
                    self._stop,
                    self._first_line,
                    self._range_rows,
                    self._range_hash.hexdigest(),
                )
            )
        self._range_rows = 0
        self._range_hash = hashlib.blake2b(digest_size=16)

    def close(self) -> None:
        self._flush_range()
        if self._rows:
            self.partitions.append(
                PartitionPlan(
                    pid=len(self.partitions),
                    ranges=tuple(self._ranges),
                    rows=self._rows,
                    bytes=self._bytes,
                    content_hash="",
                )
            )
        self._ranges, self._rows, self._bytes = [], 0, 0
        self._file = -1


def columnar_hash(table: pa.Table) -> str:
    """A content hash of a table that does not depend on how it is chunked."""
    h = hashlib.blake2b(digest_size=16)
    h.update(table.schema.remove_metadata().to_string().encode())
    table = table.combine_chunks()
    for col in table.columns:
        arr = col.chunk(0) if col.num_chunks else pa.array([], col.type)
        h.update(str(arr.null_count).encode())
        h.update(_array_bytes(arr))
    return h.hexdigest()


def _array_bytes(arr: pa.Array) -> bytes:
    """Canonical bytes of an array's values: an IPC stream of a fresh copy of it."""
    copy = pa.concat_arrays([arr])  # drops slice offsets
    sink = pa.BufferOutputStream()
    batch = pa.record_batch([copy], names=["c"])
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def combine_digests(digests: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()


def build_plan(sources: list[SourceFile], config: PartitionConfig, cpus: int) -> Plan:
    """Stream the sources once and cut them into partitions."""
    srcs = tuple(sources)
    rows_bound, mb_bound = choose_rows_bound(config, srcs, cpus)
    cutter = _Cutter(rows_bound, mb_bound)
    for idx, src in enumerate(srcs):
        if src.fmt in LINE_FORMATS:
            array_file = is_json_array(src)
            for line_no, offset, line in iter_lines(src):
                if cutter.full_for(len(line)):
                    cutter.close()
                stop = offset + (1 if array_file else len(line))
                cutter.add(idx, offset, stop, line_no, 1, len(line))
                cutter.hash_update(line)
        else:
            pos = 0
            for batch in iter_columnar_batches(src):
                for piece in _cut_batch(batch, cutter):
                    cutter.add(idx, pos, pos + piece.num_rows, 0, piece.num_rows, piece.nbytes)
                    pos += piece.num_rows
    cutter.close()
    partitions = [_finish_hashes(p, srcs) for p in cutter.partitions]
    return Plan(srcs, tuple(partitions), rows_bound, mb_bound, config.mode)


def _cut_batch(batch: pa.RecordBatch, cutter: _Cutter) -> Iterator[pa.RecordBatch]:
    """Slices of ``batch`` that each fill the open partition up to its bounds, no further.

    The rows of a slice are as many as the partition has room for, by count and by
    in-memory Arrow bytes (``RecordBatch.nbytes`` of the slice); the partition is closed
    before each slice that would not fit. A single row larger than the MB bound makes a
    partition of its own.
    """
    off = 0
    while off < batch.num_rows:
        if cutter.full_for(0):
            cutter.close()
        rows = min(batch.num_rows - off, cutter.rows_bound - cutter.rows)
        room = cutter.max_bytes - cutter.nbytes
        if batch.slice(off, rows).nbytes > room:
            rows = _rows_within(batch, off, rows, room)
            if rows == 0:
                if cutter.rows:
                    cutter.close()
                    continue
                rows = 1  # one row over the bound: a partition of its own
        piece = batch.slice(off, rows)
        yield piece
        off += rows


def _rows_within(batch: pa.RecordBatch, off: int, most: int, room: int) -> int:
    """The most rows from ``off`` (at most ``most``) whose Arrow size fits ``room`` bytes."""
    lo, hi = 0, most  # batch.slice(off, lo) fits; batch.slice(off, hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if batch.slice(off, mid).nbytes <= room:
            lo = mid
        else:
            hi = mid
    return lo


def _finish_hashes(part: PartitionPlan, sources: tuple[SourceFile, ...]) -> PartitionPlan:
    """Hash columnar ranges as the runner will read them back; combine range digests."""
    ranges = []
    for r in part.ranges:
        if sources[r.file].fmt not in LINE_FORMATS:
            digest = columnar_hash(read_rows(sources[r.file], r.start, r.stop))
            r = SourceRange(r.file, r.start, r.stop, r.first_line, r.rows, digest)
        ranges.append(r)
    content = combine_digests([r.digest for r in ranges])
    return PartitionPlan(part.pid, tuple(ranges), part.rows, part.bytes, content)
