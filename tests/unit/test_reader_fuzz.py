"""Fuzz the readers: malformed and adversarial records in every input format.

For each format, seeded random files (adversarial records, random bytes, flipped and cut
bytes) go through the whole read path the runner uses (list, plan, read each partition
back), without Ray. Each must end in one of two ways: an ``InputError`` naming the file, or
every unit the plan counted accounted for as a record or a reject. Anything else (another
exception, a count that does not add up) fails the test.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import zstandard

from dj_runner.engine.partition_task import read_source
from dj_runner.errors import InputError, RecipeError
from dj_runner.io.sources import list_sources
from dj_runner.plan.partitioner import build_plan
from dj_runner.recipe.parse import parse_recipe

FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "json", "parquet", "arrow", "csv")
SEEDS = range(12)

ADVERSARIAL_LINES: list[bytes] = [
    b'{"text": "plain"}',
    b'{"text": "lone \\ud800 high"}',
    b'{"text": "lone \\udfff low", "id": 1}',
    b'{"text": "ok", "meta": {"deep": "\\udc00"}}',
    b'{"text": "cesu \xed\xa0\x80"}',
    b'{"text": "latin-1 caf\xe9"}',
    b'{"text": "pair \\ud83d\\ude00 ok"}',
    b'{"text": null}',
    b'{"meta": "no text"}',
    b'{"text": 12345}',
    b'{"text": ["a"]}',
    b'{"text": "x", "text": "dup keys"}',
    b'{"text": "nan", "score": NaN, "inf": Infinity}',
    b'{"text": "huge", "n": 123456789012345678901234567890}',
    b'{"text": "nest", "d": ' + b"[" * 50 + b"]" * 50 + b"}",
    b'{"text": "ctrl \\u0000 \\u001f", "k\\u0000": 1}',
    b"\xef\xbb\xbf" + b'{"text": "bom"}',
    b'{"text": "crlf"}\r',
    b"[1, 2, 3]",
    b"42",
    b'"a string"',
    b"null",
    b"{",
    b'{"text": "trunc',
    b"\x00\x01\x02\xff",
    b"   ",
    b"",
]


def _random_line(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.6:
        return rng.choice(ADVERSARIAL_LINES)
    if kind < 0.8:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))).replace(b"\n", b"")
    rec: dict[str, Any] = {"text": "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(20))}
    rec[rng.choice(["id", "meta", "score"])] = rng.choice([1, "s", 2.5, None, {"a": [1]}, True])
    return json.dumps(rec, ensure_ascii=rng.random() < 0.5).encode()


def _line_body(rng: random.Random, n: int) -> bytes:
    return b"\n".join(_random_line(rng) for _ in range(n)) + rng.choice([b"\n", b""])


def _damage(rng: random.Random, data: bytes) -> bytes:
    """Maybe flip a few bytes, maybe cut the tail, maybe both."""
    data = bytearray(data)
    if data and rng.random() < 0.4:
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    if len(data) > 2 and rng.random() < 0.4:
        data = data[: rng.randrange(1, len(data))]
    return bytes(data)


def _table(rng: random.Random, n: int) -> pa.Table:
    texts = [
        rng.choice(["plain", None, "", "中文 😀", "x" * rng.randrange(1, 300), "a\nb\r\nc"])
        for _ in range(n)
    ]
    return pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "id": pa.array([rng.choice([None, rng.randrange(-(2**62), 2**62)]) for _ in range(n)]),
            "blob": pa.array([rng.randbytes(rng.randrange(0, 8)) for _ in range(n)]),
        }
    )


def make_file(tmp: Path, fmt: str, seed: int) -> Path:
    rng = random.Random(seed * 1000 + FORMATS.index(fmt))
    n = rng.randrange(1, 60)
    path = tmp / f"in.{fmt}"
    if fmt.startswith("jsonl"):
        body = _line_body(rng, n)
        if fmt == "jsonl.gz":
            body = gzip.compress(body)
        elif fmt == "jsonl.zst":
            body = zstandard.ZstdCompressor(write_checksum=rng.random() < 0.5).compress(body)
        path.write_bytes(_damage(rng, body) if fmt != "jsonl" else body)
    elif fmt == "json":
        if rng.random() < 0.5:
            items = [
                rng.choice([{"text": "ok"}, {"text": "bad \ud800"}, {"text": None}, 3, [1], "s"])
                for _ in range(n)
            ]
            body = json.dumps(items, ensure_ascii=rng.random() < 0.5).encode(
                "utf-8", "surrogatepass"
            )
        else:
            body = _line_body(rng, n)
        path.write_bytes(_damage(rng, body) if rng.random() < 0.5 else body)
    else:
        table = _table(rng, n)
        sink = io.BytesIO()
        if fmt == "parquet":
            pq.write_table(table, sink, row_group_size=rng.randrange(1, 20))
        elif fmt == "arrow":
            with pa.ipc.new_file(sink, table.schema) as w:
                for batch in table.to_batches(max_chunksize=rng.randrange(1, 20)):
                    w.write_batch(batch)
        else:
            pacsv.write_csv(table.drop_columns(["blob"]), sink)
        body = sink.getvalue()
        path.write_bytes(_damage(rng, body) if rng.random() < 0.5 else body)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_readers_never_crash_and_never_miscount(tmp_path, fmt):
    outcomes = {"input_error": 0, "accounted": 0}
    for seed in SEEDS:
        d = tmp_path / str(seed)
        d.mkdir()
        path = make_file(d, fmt, seed)
        recipe = parse_recipe(
            {
                "dataset_path": str(path),
                "export_path": str(d / "out.jsonl"),
                "partition_size": 7,
                "process": ["whitespace_normalization_mapper"],
            }
        )
        try:
            plan = build_plan(list_sources(recipe.dataset_path), recipe.partition, cpus=2)
            rows = rejected = 0
            for part in plan.partitions:
                table, bad = read_source(part, plan.sources, recipe)
                rows += table.num_rows
                rejected += len(bad)
                assert all(b.source == str(path) and b.line >= 1 for b in bad)
                # what is kept has text the ops can work on
                texts = table.column("text")
                assert texts.null_count == 0
            assert rows + rejected == plan.total_rows, (seed, rows, rejected)
            outcomes["accounted"] += 1
        except InputError as exc:
            assert str(path) in str(exc)
            outcomes["input_error"] += 1
        except RecipeError as exc:  # a CSV whose text column is not a string column
            assert "text" in str(exc)
            outcomes["accounted"] += 1
    assert sum(outcomes.values()) == len(SEEDS)
    assert outcomes["accounted"] > 0  # the generator does not only make unreadable files
