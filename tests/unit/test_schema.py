"""Unifying pieces' schemas: no value is coerced, whatever the cut between pieces."""

from __future__ import annotations

import json

import pyarrow as pa

from dj_runner.io.table_schema import concat_unified, conform, is_json_text, json_text_field, unify


def test_agreeing_types_stay_and_nulls_take_the_typed_version():
    a = pa.schema([("text", pa.string()), ("n", pa.int64())])
    b = pa.schema([("text", pa.string()), ("n", pa.null()), ("extra", pa.bool_())])
    u = unify([a, b])
    assert u.names == ["text", "n", "extra"]
    assert u.field("n").type == pa.int64() and u.field("extra").type == pa.bool_()


def test_disagreeing_types_become_json_text():
    u = unify([pa.schema([("n", pa.int64())]), pa.schema([("n", pa.float64())])])
    assert is_json_text(u.field("n"))
    u = unify([pa.schema([("m", pa.string())]), pa.schema([json_text_field("m")])])
    assert is_json_text(u.field("m"))


def test_conform_fills_missing_columns_and_encodes_json_text_exactly():
    t = pa.table({"n": pa.array([1, 2], pa.int64())})
    u = pa.schema([json_text_field("n"), pa.field("x", pa.string())])
    got = conform(t, u)
    assert got.schema == u
    assert got.column("n").to_pylist() == ["1", "2"]  # 1 stays 1, never 1.0
    assert got.column("x").null_count == 2


def test_concat_unified_does_not_depend_on_the_cut():
    records = [{"v": 1}, {"v": 2.5}, {"v": None}, {"v": 3}]
    whole = pa.table(
        {"v": pa.array([json.dumps(r["v"]) if r["v"] is not None else None for r in records])}
    )
    pieces = [
        pa.table({"v": pa.array([1], pa.int64())}),
        pa.table({"v": pa.array([2.5, None])}),
        pa.table({"v": pa.array([3])}),
    ]
    got = concat_unified(pieces)
    assert got.column("v").to_pylist() == whole.column("v").to_pylist()
    assert concat_unified([pieces[0]]) is pieces[0]
