"""The JSONL export writer against the plain definition: json.dumps of each parsed row."""

from __future__ import annotations

import io
import json
import math
import random
from typing import Any

import pyarrow as pa

from dj_runner.io.export import write_jsonl
from dj_runner.io.sources import records_to_table
from dj_runner.io.table_schema import is_json_text


def reference(table: pa.Table) -> bytes:
    """Each row with its JSON-text columns parsed, through json.dumps."""
    json_cols = [f.name for f in table.schema if is_json_text(f)]
    out = []
    for row in table.to_pylist():
        for c in json_cols:
            if row[c] is not None:
                row[c] = json.loads(row[c])
        out.append(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return "".join(out).encode()


def written(table: pa.Table, slice_rows: int = 2048) -> bytes:
    fh = io.BytesIO()
    write_jsonl(table, fh, slice_rows=slice_rows)
    return fh.getvalue()


def random_records(seed: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    values: list[Any] = [
        None,
        0,
        -7,
        2**70,
        1.5,
        -0.0,
        math.inf,
        math.nan,
        "plain",
        'quote " and \\ backslash',
        "中文 😀 \u2028 \x00 control",
        True,
        [],
        [1, "two", None, {"k": [3.25]}],
        {},
        {"nested": {"deep": ["x", 1e-300]}, "é": None},
    ]
    keys = ["text", "meta", "score", "tags", "weird key \"'"]
    return [
        {k: rng.choice(values) for k in keys if rng.random() < 0.8}
        | {"text": rng.choice(["a", "b c", None, "ünïcode"])}
        for _ in range(n)
    ]


def test_matches_json_dumps_of_each_row() -> None:
    records = random_records(seed=1, n=500)
    table = records_to_table(records, ("text",))
    assert any(is_json_text(f) for f in table.schema)  # mixed values became JSON text
    assert written(table) == reference(table)
    assert written(table, slice_rows=7) == reference(table)


def test_typed_columns_nulls_and_structs() -> None:
    table = pa.table(
        {
            "text": pa.array(["x", None, "z"], pa.string()),
            "n": pa.array([1, None, 3], pa.int64()),
            "s": pa.array([{"a": 1.0, "b": "q"}, None, {"a": None, "b": "r"}]),
            "ts": pa.array([0, 1, None], pa.timestamp("s")),
        }
    )
    assert written(table) == reference(table)


def test_no_columns_and_no_rows() -> None:
    assert written(pa.table({"text": pa.array([], pa.string())})) == reference(
        pa.table({"text": pa.array([], pa.string())})
    )
    no_columns = pa.Table.from_pydict({"x": [1, 2]}).drop_columns(["x"])
    assert written(no_columns) == reference(no_columns) == b"{}\n{}\n"


def test_parquet_export_keeps_nested_fields_nested(tmp_path):  # m13
    import pyarrow.parquet as pq

    from dj_runner.io.export import write_export

    recs = [
        {"text": "a", "meta": {"src": "x", "n": 1}, "tags": ["a", "b"], "mixed": 1},
        {"text": "b", "meta": {"src": "y"}, "tags": [], "mixed": "one"},
    ]
    parts = [records_to_table(recs[:1], ("text",)), records_to_table(recs[1:], ("text",))]
    for target in (tmp_path / "r.parquet", tmp_path / "shards-parquet"):
        write_export(
            str(target), lambda: (iter([p]) for p in parts), [p.schema for p in parts], False
        )
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.schema.field("meta").type == pa.struct([("src", pa.string()), ("n", pa.int64())])
    assert table.schema.field("tags").type == pa.list_(pa.string())
    assert table.column("meta").to_pylist() == [{"src": "x", "n": 1}, {"src": "y", "n": None}]
    assert is_json_text(table.schema.field("mixed"))  # no silent coercion of 1 vs "one"
    assert len(list((tmp_path / "shards-parquet").glob("part-*.parquet"))) == 2
    shards = pq.read_table(tmp_path / "shards-parquet")
    assert shards.column("meta").to_pylist() == table.column("meta").to_pylist()


def test_text_columns_are_escaped_as_json_dumps_escapes_them(monkeypatch) -> None:
    """Text columns are written by a C pass (``json_strings``): every code point of the first
    planes and the escaped ones in random mixes, with nulls and slices, give json.dumps's
    bytes; without the extension, the plain path gives the same."""
    rng = random.Random(3)
    points = [chr(c) for c in range(0x3000) if not 0xD800 <= c < 0xE000] + ["😀", "\U0010ffff"]
    special = ['"', "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "\u2028"]
    texts: list[str | None] = ["".join(points[i : i + 97]) for i in range(0, len(points), 97)]
    texts += [
        "".join(rng.choice([*special, "a", "é"]) for _ in range(rng.randrange(30)))
        for _ in range(300)
    ]
    texts[5::17] = [None] * len(texts[5::17])
    table = pa.table({"text": pa.array(texts, pa.string()), "n": list(range(len(texts)))})
    expected = reference(table)
    assert written(table) == expected
    assert written(table.slice(3), slice_rows=11) == reference(table.slice(3))
    from dj_runner.ops import _native

    monkeypatch.setattr(_native, "_native", None)
    assert _native.json_strings(pa.array(["x"])) is None
    assert written(table) == expected
