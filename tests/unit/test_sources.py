"""Input readers: listing, line and row ranges, the malformed-record rule, unreadable files."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from dj_runner.errors import InputError, RecipeError
from dj_runner.io import sources
from dj_runner.io.sources import (
    iter_columnar_batches,
    iter_lines,
    list_sources,
    parse_lines,
    read_line_range,
    read_rows,
    records_to_table,
    reject_null_text,
)

TEXT = ("text",)
BODY = b"".join(b'{"text": "record %d, value %d"}\n' % (i, i * 7919 % 10007) for i in range(5000))


def one(path: Path):
    (src,) = list_sources(str(path))
    return src


def parse_file(path: Path, text_keys=TEXT):
    src = one(path)
    lines = [(n, raw) for n, _, raw in iter_lines(src)]
    return parse_lines(lines, src.path, text_keys)


# -- listing ------------------------------------------------------------------------------


def test_list_sources_sorted_recursive_and_filtered(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n'))
    (tmp_path / "notes.txt").write_text("not input")
    srcs = list_sources(str(tmp_path))
    assert [Path(s.path).name for s in srcs] == ["a.jsonl.gz", "x.jsonl"]
    assert (srcs[0].fmt, srcs[0].compression) == ("jsonl", "gzip")


def test_list_sources_errors_name_the_path(tmp_path):
    with pytest.raises(RecipeError, match="an existing file, directory or glob"):
        list_sources(str(tmp_path / "nope.jsonl"))
    with pytest.raises(RecipeError, match="a glob that matches files"):
        list_sources(str(tmp_path / "*.jsonl"))
    (tmp_path / "only.txt").write_text("x")
    with pytest.raises(RecipeError, match="files ending in"):
        list_sources(str(tmp_path))


# -- the malformed-record rule (M2, M5) ---------------------------------------------------


def test_lone_surrogates_in_any_field_are_rejected_with_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(
        b'{"text": "good one", "id": 1}\n'
        b'{"text": "lone \\ud800 escape", "id": 2}\n'
        b'{"text": "bad meta", "meta": "lone \\udc00"}\n'
        b'{"text": "cesu \xed\xa0\x80 bytes"}\n'
        b'{"text": "a pair \\ud83d\\ude00 is fine", "k\\ud800": 1}\n'
        b'{"text": "a pair \\ud83d\\ude00 is fine"}\n'
    )
    records, bad = parse_file(path)
    assert [r["text"] for r in records] == ["good one", "a pair \U0001f600 is fine"]
    assert [(b.line, "surrogate" in b.error) for b in bad] == [
        (2, True),
        (3, True),
        (4, True),
        (5, True),
    ]
    assert all(b.source == str(path) for b in bad)
    records_to_table(records, TEXT)  # the good ones build a table (this crashed at 31cdb7c)


def test_missing_null_and_non_string_text_are_rejected(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"text": "ok"}\n{"meta": 1}\n{"text": null}\n{"text": 5}\n[1]\n42\n{"text": "trunc\n'
    )
    records, bad = parse_file(path)
    assert [r["text"] for r in records] == ["ok"]
    errors = {b.line: b.error for b in bad}
    assert errors[2] == "text field 'text' is missing"
    assert errors[3] == "text field 'text' is null"
    assert "is a int" in errors[4] and "not an object" in errors[5]
    assert "not an object" in errors[6] and "invalid JSON" in errors[7]
    assert len(records) + len(bad) == 7  # every line accounted for


def test_other_text_keys_may_be_missing_but_not_wrong(tmp_path):
    path = tmp_path / "k.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b", "title": null}\n{"text": "c", "title": 3}\n')
    records, bad = parse_file(path, ("text", "title"))
    assert len(records) == 2 and [b.line for b in bad] == [3]


def test_columnar_null_text_rows_are_rejected_with_row_numbers():
    table = pa.table({"text": ["a", None, "c", None]})
    kept, bad = reject_null_text(table, "text", "f.parquet", first_row=10)
    assert kept.column("text").to_pylist() == ["a", "c"]
    assert [b.line for b in bad] == [12, 14]


# -- unreadable files (M8) ----------------------------------------------------------------


def test_truncated_gzip_names_the_file_and_line(tmp_path):
    # larger than the chunks lines are read in, so that the error comes after some lines
    body = b"".join(b'{"text": "record %d with some words"}\n' % i for i in range(400_000))
    gz = gzip.compress(body)
    path = tmp_path / "trunc.jsonl.gz"
    path.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(InputError, match=r"trunc\.jsonl\.gz .*after line \d+") as info:
        list(iter_lines(one(path)))
    assert "EOFError" in str(info.value)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("notgz.jsonl.gz", b"not gzip\n"),
        ("notzst.jsonl.zst", b"not zstd at all\n"),
        ("trunc.jsonl.zst", zstandard.ZstdCompressor().compress(BODY)[:3000]),
    ],
)
def test_corrupt_compressed_input_is_an_input_error(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    src = one(path)
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        list(iter_lines(src))
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        list(read_line_range(src, 0, 10**9, 1))


def test_json_file_that_is_really_jsonl_is_an_input_error(tmp_path):
    path = tmp_path / "arr.json"
    path.write_bytes(b'[1, 2]\n{"text": "a real record"}\n')
    with pytest.raises(InputError, match=r"arr\.json line 2: a \.json file must hold one"):
        list(iter_lines(one(path)))


def test_json_array_elements_with_lone_surrogates_are_rejected(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[{"text": "ok"}, {"text": "bad \\ud800"}]')
    records, bad = parse_file(path)
    assert [r["text"] for r in records] == ["ok"] and bad[0].line == 2


def test_corrupt_columnar_input_is_an_input_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"bad\.parquet"):
        list(iter_columnar_batches(one(path)))
    csv = tmp_path / "latin.csv"
    csv.write_bytes(b"text\ncaf\xe9\n")
    with pytest.raises(InputError, match=r"latin\.csv"):
        list(iter_columnar_batches(one(csv)))


# -- ranges -------------------------------------------------------------------------------


def test_line_ranges_cover_the_file_exactly(tmp_path):
    lines = [json.dumps({"text": f"r{i}"}).encode() + b"\n" for i in range(10)]
    for name, data in (
        ("a.jsonl", b"".join(lines)),
        ("a.jsonl.gz", gzip.compress(b"".join(lines))),
        ("a.jsonl.zst", zstandard.ZstdCompressor().compress(b"".join(lines))),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        src = one(path)
        units = list(iter_lines(src))
        cut = units[4][1]
        first = list(read_line_range(src, 0, cut, 1))
        rest = list(read_line_range(src, cut, 10**9, units[4][0]))
        assert [raw for _, raw in first + rest] == lines
        assert [n for n, _ in first + rest] == list(range(1, 11))


def test_read_rows_of_parquet_and_arrow(tmp_path):
    table = pa.table({"text": [f"t{i}" for i in range(50)], "n": list(range(50))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=7)
    with (
        pa.OSFile(str(tmp_path / "a.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as w,
    ):
        for batch in table.to_batches(max_chunksize=9):
            w.write_batch(batch)
    for name in ("a.parquet", "a.arrow"):
        got = read_rows(one(tmp_path / name), 5, 23)
        assert got.column("n").to_pylist() == list(range(5, 23))


def test_records_to_table_keeps_mixed_and_nested_values_as_json_text():
    recs = [{"text": "a", "id": 1, "meta": {"x": 1}}, {"text": "b", "id": "two"}]
    table = records_to_table(recs, TEXT)
    assert table.column_names == ["text", "id", "meta"]
    assert table.column("id").to_pylist() == ["1", '"two"']
    assert table.column("meta").to_pylist() == ['{"x": 1}', None]


def test_multi_frame_zstd_reads_every_frame(tmp_path):
    c = zstandard.ZstdCompressor()
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(c.compress(BODY) + c.compress(b'{"text": "last frame"}\n'))
    units = list(iter_lines(one(path)))
    assert len(units) == 5001 and json.loads(units[-1][2]) == {"text": "last frame"}
    assert b"".join(raw for _, _, raw in units) == BODY + b'{"text": "last frame"}\n'


# -- lines read in chunks -----------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 22])
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_lines_are_what_readline_gives_whatever_the_chunk(
    tmp_path, monkeypatch, chunk, compression
):
    """Lines are read a chunk at a time; whatever the chunk size, the planner's lines (number,
    offset, bytes) and every partition's range read back are those of ``readline``."""
    monkeypatch.setattr(sources, "LINE_CHUNK", chunk)
    rng = random.Random(chunk)
    pieces = [b"\n", b"\r\n", b"  \n", b'{"text": "a"}\n', b'{"text": "\xc3\xa9t\xc3\xa9"}\r\n']
    data = b"".join(rng.choice([*pieces, b"x" * 50]) for _ in range(300)) + b'{"text": "end"}'
    path = tmp_path / ("f.jsonl.gz" if compression == "gzip" else "f.jsonl")
    path.write_bytes(gzip.compress(data) if compression == "gzip" else data)
    expected, offset = [], 0
    for n, line in enumerate(io.BytesIO(data).readlines(), 1):
        if line.strip():
            expected.append((n, offset, line))
        offset += len(line)
    src = one(path)
    assert list(iter_lines(src)) == expected
    starts = [0]
    for line in io.BytesIO(data).readlines():
        starts.append(starts[-1] + len(line))
    for _ in range(40):  # ranges between line boundaries, as the plan cuts them
        i, j = sorted(rng.sample(range(len(starts)), 2))
        got = list(read_line_range(src, starts[i], starts[j], i + 1))
        assert got == [(n, line) for n, off, line in expected if starts[i] <= off < starts[j]]
