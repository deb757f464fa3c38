"""The export's read-ahead: partitions in order, the next small one read while one is written."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from dj_runner.engine.finalize import _read_ahead


def _reads(n: int) -> tuple[list, list[threading.Event]]:
    started = [threading.Event() for _ in range(n)]

    def read(i: int):
        def go():
            started[i].set()
            return iter([pa.table({"i": [i, i]}), pa.table({"i": [i]})])

        return go

    return [read(i) for i in range(n)], started


def test_the_next_small_partition_is_read_while_one_is_written() -> None:
    reads, started = _reads(4)
    parts = _read_ahead(reads, [True, True, False, True])
    first = next(parts)
    # partition 1 is read by the thread while partition 0 is still being consumed
    assert started[1].wait(30), "partition 1 was not read ahead"
    assert not started[2].is_set()  # too large to read ahead: read at its turn
    assert [t.column("i").to_pylist() for t in first] == [[0, 0], [0]]
    rest = [[v for t in it for v in t.column("i").to_pylist()] for it in parts]
    assert rest == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]


def test_a_read_error_reaches_the_writer_in_its_turn() -> None:
    reads, _ = _reads(3)

    def broken():
        raise OSError("checkpoint gone")

    reads[1] = broken
    parts = _read_ahead(reads, [True, True, True])
    assert [v for t in next(parts) for v in t.column("i").to_pylist()] == [0, 0, 0]
    with pytest.raises(OSError, match="checkpoint gone"):
        next(parts)


def test_a_writer_that_stops_early_leaves_no_thread_behind() -> None:
    reads, _ = _reads(3)
    parts = _read_ahead(reads, [True, True, True])
    next(parts)
    parts.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("dj-export-read")]
