"""Applying ops to tables: slicing changes nothing, errors name the sample in the partition."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from dj_runner.engine import apply
from dj_runner.engine.apply import apply_local
from dj_runner.ops import get_op
from dj_runner.ops.common.base import STATS_COLUMN, SampleError


def table(n: int) -> pa.Table:
    return pa.table({"text": [("word " * (i % 13)).strip() or None for i in range(n)]})


def test_slices_give_the_same_result(monkeypatch):
    op = get_op("words_num_filter")(min_num=3)
    whole = apply_local(op, table(1000), "text")
    monkeypatch.setattr(apply, "BATCH_ROWS", 64)
    sliced = apply_local(op, table(1000), "text")
    assert sliced.equals(whole)
    assert whole.num_rows < 1000
    assert "num_words" in {f.name for f in whole.schema.field(STATS_COLUMN).type}


def test_error_names_the_sample_by_partition_position(monkeypatch):
    monkeypatch.setattr(apply, "BATCH_ROWS", 10)
    op = get_op("text_length_filter")()

    class Boom(type(op)):
        def compute_stats(self, texts):
            if any(t == "bad" for t in texts.to_pylist()):
                raise ValueError("bad sample")
            return super().compute_stats(texts)

    t = pa.table({"text": ["fine text here"] * 25 + ["bad"] + ["ok"] * 5})
    with pytest.raises(SampleError) as info:
        apply_local(Boom(), t, "text")
    assert info.value.index == 25 and info.value.preview == "bad"


def test_input_stats_from_an_earlier_run_are_kept_and_extended():  # M4
    """A previous run's ``__dj__stats__``: a struct (Parquet) or JSON objects (JSONL)."""
    op = get_op("words_num_filter")(min_num=1)
    texts = ["two words", "three words here"]
    earlier = [{"text_len": 9}, {"text_len": 16}]
    as_struct = pa.table({"text": texts, STATS_COLUMN: pa.array(earlier)})
    as_json = pa.table({"text": texts, STATS_COLUMN: pa.array([json.dumps(s) for s in earlier])})
    all_null = pa.table({"text": texts, STATS_COLUMN: pa.nulls(2)})
    for table in (as_struct, as_json):
        out = apply_local(op, table, "text")
        assert out.column(STATS_COLUMN).to_pylist() == [
            {"text_len": 9, "num_words": 2},
            {"text_len": 16, "num_words": 3},
        ]
    out = apply_local(op, all_null, "text")
    assert out.column(STATS_COLUMN).to_pylist() == [{"num_words": 2}, {"num_words": 3}]
    bad = pa.table({"text": texts, STATS_COLUMN: pa.array([1, 2])})
    with pytest.raises(TypeError, match="__dj__stats__"):
        apply_local(op, bad, "text")
