"""Crash-safe writes: unique temporary names, torn-line repair on append."""

from __future__ import annotations

from pathlib import Path

from dj_runner.store.atomic import append_record, read_records, tmp_name


def test_temporary_names_are_unique_not_per_pid(tmp_path: Path) -> None:
    names = {tmp_name(tmp_path / "a.parquet").name for _ in range(100)}
    assert len(names) == 100 and all(n.startswith(".a.parquet.tmp-") for n in names)


def test_append_after_a_torn_line_does_not_glue_onto_it(tmp_path: Path) -> None:
    log = tmp_path / "commits.jsonl"
    append_record(log, {"n": 1})
    with open(log, "ab") as fh:
        fh.write(b'{"n": 2, "tor')  # a crash (or a full disk) mid-append
    append_record(log, {"n": 3})
    assert [r["n"] for r in read_records(log)] == [1, 3]
