"""Fencing across hosts: a superseded writer's late commits are ignored or refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from dj_runner.store.atomic import append_record
from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey
from dj_runner.store.fencing import Superseded, fenced, read_claim, take_claim


def table(n: int) -> pa.Table:
    return pa.table({"text": [f"row {i}" for i in range(n)]})


def test_claims_count_up(tmp_path: Path) -> None:
    a = take_claim(tmp_path, "run-a")
    b = take_claim(tmp_path, "run-b")
    assert (a.epoch, b.epoch) == (1, 2)
    assert read_claim(tmp_path) == {"epoch": 2, "run_id": "run-b"}


def test_a_superseded_writer_cannot_commit(tmp_path: Path) -> None:
    old = take_claim(tmp_path, "run-old").with_plan("plan1")
    store_old = CheckpointDir(tmp_path / "p0", "parquet", "none", fence=old)
    store_old.save(CheckpointKey(1), table(3), "op")
    new = take_claim(tmp_path, "run-new").with_plan("plan1")
    with pytest.raises(Superseded, match="run-new"):
        store_old.save(CheckpointKey(2), table(2), "op")
    store_new = CheckpointDir(tmp_path / "p0", "parquet", "none", fence=new)
    assert store_new.newest_key() == CheckpointKey(1)  # the old run's earlier commit counts


def test_a_superseded_writers_late_commit_is_ignored_by_readers(tmp_path: Path) -> None:
    old = take_claim(tmp_path, "run-old").with_plan("plan1")
    new = take_claim(tmp_path, "run-new").with_plan("plan1")
    store_new = CheckpointDir(tmp_path / "p0", "parquet", "none", fence=new)
    store_new.save(CheckpointKey(1), table(3), "op")
    # The old writer passed its claim check before the new claim, then appends late
    # (the window the check cannot close): its record lands after the newer run's.
    late = dict(store_new.commits()[0].to_record(old), step=5, file="op005.parquet")
    append_record(store_new.commits_path, late)
    assert store_new.newest_key() == CheckpointKey(1)
    assert [c.key.step for c in store_new.commits()] == [1]


def test_records_of_another_plan_are_ignored(tmp_path: Path) -> None:
    fence = take_claim(tmp_path, "run").with_plan("plan-A")
    CheckpointDir(tmp_path / "p0", "parquet", "none", fence=fence).save(
        CheckpointKey(2), table(1), "op"
    )
    other = CheckpointDir(tmp_path / "p0", "parquet", "none", fence=fence.with_plan("plan-B"))
    assert other.newest_key() is None and other.newest_valid() is None


def test_fenced_filter() -> None:
    recs = [
        {"epoch": 1, "plan_id": "p", "n": 1},
        {"epoch": 2, "plan_id": "p", "n": 2},
        {"epoch": 1, "plan_id": "p", "n": 3},  # late, superseded
        {"epoch": 2, "plan_id": "q", "n": 4},  # other plan
        {"epoch": "x", "plan_id": "p", "n": 5},  # wrong shape
        {"epoch": 3, "plan_id": "p", "n": 6},
    ]
    assert [r["n"] for r in fenced(recs, "p")] == [1, 2, 6]


def test_malformed_commit_records_are_skipped(tmp_path: Path) -> None:
    store = CheckpointDir(tmp_path / "p0", "parquet", "none")
    store.save(CheckpointKey(1), table(2), "op")
    append_record(store.commits_path, {"step": 99})
    append_record(store.commits_path, {"step": "x", "file": "a", "rows": 1})
    assert [c.key.step for c in store.commits()] == [1]
