"""Adversarial inputs through a whole job on an embedded Ray: rejects, types, chained runs."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dj_runner.contract import ExitCode
from dj_runner.engine.executor import Executor
from dj_runner.ops.common.base import STATS_COLUMN
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.workdir import WorkDir

from conftest import read_jsonl

pytestmark = pytest.mark.usefixtures("ray_session")


def run(tmp: Path, name: str, **keys):
    raw = {"project_name": name, "partition_size": 2, **keys}
    result = Executor(parse_recipe(raw), work_dir=tmp / f"{name}-work").run()
    return result


def test_surrogates_and_missing_text_are_rejects_not_a_crash(tmp_path):  # M2, M5
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"text": "good one", "id": 1}\n'
        b'{"text": "lone \\ud800 escape", "id": 2}\n'
        b'{"text": "good two", "meta": "lone \\udc00"}\n'
        b'{"text": "cesu \xed\xa0\x80 bytes"}\n'
        b'{"text": null, "id": 5}\n'
        b'{"id": 6}\n'
        b'{"text": "good three", "id": 7}\n'
    )
    result = run(
        tmp_path,
        "surr",
        dataset_path=str(src),
        export_path=str(tmp_path / "out.jsonl"),
        process=[{"whitespace_normalization_mapper": {}}],
    )
    assert result.exit_code == ExitCode.OK, result.error
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["good one", "good three"]
    rejects = [
        r
        for p in sorted(WorkDir(tmp_path / "surr-work").rejects_dir.glob("*.jsonl"))
        for r in read_jsonl(p)
    ]
    assert sorted(r["line"] for r in rejects) == [2, 3, 4, 5, 6]
    assert all(r["source"] == str(src) for r in rejects)
    assert result.rows_in == 7 and result.rows_out + result.rejected == 7


def test_typed_columns_survive_jsonl_checkpoints(tmp_path):  # M16, m13
    table = pa.table(
        {
            "text": ["row one here", "row two here", "row three here"],
            "blob": pa.array([b"\x00\x01\x02", b"\xff\xfe", None], pa.binary()),
            "ts": pa.array(
                [dt.datetime(2024, 5, 1, 12), None, dt.datetime(1999, 1, 1)],
                pa.timestamp("us", tz="UTC"),
            ),
            "day": pa.array([dt.date(2024, 5, 1), None, dt.date(2000, 2, 29)], pa.date32()),
            "price": pa.array(
                [decimal.Decimal("1.50"), None, decimal.Decimal("-3.25")], pa.decimal128(6, 2)
            ),
        }
    )
    pq.write_table(table, tmp_path / "typed.parquet")
    outs = {}
    for fmt in ("parquet", "jsonl"):
        result = run(
            tmp_path,
            f"typed-{fmt}",
            dataset_path=str(tmp_path / "typed.parquet"),
            export_path=str(tmp_path / f"out-{fmt}.parquet"),
            storage_format=fmt,
            process=[{"whitespace_normalization_mapper": {}}],
        )
        assert result.exit_code == ExitCode.OK, result.error
        outs[fmt] = pq.read_table(tmp_path / f"out-{fmt}.parquet")
    assert outs["jsonl"].equals(outs["parquet"])
    assert outs["jsonl"].column("blob").to_pylist() == [b"\x00\x01\x02", b"\xff\xfe", None]
    assert outs["jsonl"].schema.field("price").type == pa.decimal128(6, 2)
    result = run(
        tmp_path,
        "typed-export",
        dataset_path=str(tmp_path / "typed.parquet"),
        export_path=str(tmp_path / "out.jsonl"),
        process=[{"whitespace_normalization_mapper": {}}],
    )
    assert result.exit_code == ExitCode.OK, result.error
    first = read_jsonl(tmp_path / "out.jsonl")[0]
    assert first["blob"] == "AAEC" and first["price"] == "1.50"  # base64, exact decimal


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_two_runs_chain_through_kept_stats(tmp_path, suffix):  # M4
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["a b c", "one", "x y", "longer text here"])
    )
    stage1 = tmp_path / f"stage1.{suffix}"
    first = run(
        tmp_path,
        "s1",
        dataset_path=str(src),
        export_path=str(stage1),
        keep_stats_in_res_ds=True,
        process=[{"text_length_filter": {"min_len": 1}}],
    )
    assert first.exit_code == ExitCode.OK, first.error
    second = run(
        tmp_path,
        "s2",
        dataset_path=str(stage1),
        export_path=str(tmp_path / "stage2.jsonl"),
        keep_stats_in_res_ds=True,
        process=[{"words_num_filter": {"min_num": 2}}],
    )
    assert second.exit_code == ExitCode.OK, second.error
    out = read_jsonl(tmp_path / "stage2.jsonl")
    assert [r["text"] for r in out] == ["a b c", "x y", "longer text here"]
    assert out[0][STATS_COLUMN] == {"text_len": 5, "num_words": 3}
