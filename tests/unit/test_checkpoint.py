"""Checkpoints: atomic commit, verification, fallback to the newest valid one, pruning."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey, InvalidCheckpoint


def table(n: int) -> pa.Table:
    return pa.table({"text": [f"row {i}" for i in range(n)], "n": list(range(n))})


@pytest.mark.parametrize(
    ("fmt", "comp"), [("parquet", "snappy"), ("arrow", "lz4"), ("jsonl", "none"), ("jsonl", "gzip")]
)
def test_roundtrip_keeps_schema_and_rows(tmp_path, fmt, comp):
    store = CheckpointDir(tmp_path, fmt, comp)
    t = table(5).append_column("s", pa.array([{"a": 1.5}] * 5))
    commit = store.save(CheckpointKey(1), t, "op")
    loaded = store.load(commit)
    assert loaded.equals(t)
    assert store.schema(commit).names == t.schema.names


def test_newest_valid_falls_back_and_deletes_the_broken(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy", preserve=True)
    store.save(CheckpointKey(1), table(3), "a")
    c2 = store.save(CheckpointKey(2), table(2), "b")
    path = tmp_path / c2.file
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    reasons = []
    commit, t = store.newest_valid(on_invalid=lambda c, r: reasons.append(r))
    assert commit.key == CheckpointKey(1) and t.num_rows == 3
    assert "bytes" in reasons[0] and not path.exists()


def test_checkpoints_pruned_on_purpose_are_not_reported_missing(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")  # pruning: only the newest file stays
    for step in (1, 2, 3):
        newest = store.save(CheckpointKey(step), table(step), f"op{step}")
    path = tmp_path / newest.file
    path.write_bytes(path.read_bytes()[:-10])
    reasons = []
    assert store.newest_valid(on_invalid=lambda c, r: reasons.append(r)) is None
    assert len(reasons) == 1 and newest.file in reasons[0]  # not op1's and op2's files


def test_same_size_bit_flip_is_caught_by_checksum(tmp_path):
    store = CheckpointDir(tmp_path, "arrow", "none")
    c = store.save(CheckpointKey(1), table(50), "a")
    path = tmp_path / c.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidCheckpoint, match="checksum"):
        store.load(c)
    assert store.newest_valid() is None


def test_file_without_commit_record_does_not_exist(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")
    store.save(CheckpointKey(1), table(3), "a")
    # A crash between rename and commit: the file is there, its record is not.
    import pyarrow.parquet as pq

    pq.write_table(table(9), tmp_path / "op002.parquet")
    commit, t = store.newest_valid()
    assert commit.key == CheckpointKey(1) and t.num_rows == 3


def test_torn_commit_line_is_ignored(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")
    store.save(CheckpointKey(1), table(3), "a")
    with open(store.commits_path, "ab") as fh:
        fh.write(b'{"step": 2, "hashed": false, "file": "op00')
    assert store.newest_key() == CheckpointKey(1)


def test_recommit_of_same_key_uses_newest_record(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")
    store.save(CheckpointKey(1), table(3), "a")
    store.save(CheckpointKey(1), table(4), "a")  # recomputed after a discard
    commit, t = store.newest_valid()
    assert t.num_rows == 4 and (tmp_path / commit.file).exists()


def test_prune_keeps_only_newest_unless_preserved(tmp_path):
    store = CheckpointDir(tmp_path / "a", "parquet", "snappy")
    for step in (1, 2, 3):
        store.save(CheckpointKey(step), table(step), "x")
    assert sorted(p.name for p in (tmp_path / "a").glob("op*")) == ["op003.parquet"]
    kept = CheckpointDir(tmp_path / "b", "parquet", "snappy", preserve=True)
    for step in (1, 2, 3):
        kept.save(CheckpointKey(step), table(step), "x")
    assert len(list((tmp_path / "b").glob("op*"))) == 3


def test_prune_deletes_each_superseded_file_once_and_a_rewritten_one_again(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")
    deleted: list[str] = []
    delete = store.blobs.delete
    store.blobs.delete = lambda key: (deleted.append(key), delete(key))  # type: ignore[method-assign]
    for step in (1, 2, 3, 4):
        store.save(CheckpointKey(step), table(step), "x")
    assert deleted == ["op001.parquet", "op002.parquet", "op003.parquet"]
    # A retry that writes step 2 again commits a new record of the same file: pruning past it
    # deletes that file again, as it deletes any file a record since names.
    store.save(CheckpointKey(2), table(2), "x")
    assert (tmp_path / "op002.parquet").exists()
    store.save(CheckpointKey(5), table(5), "x")
    assert sorted(deleted[3:]) == ["op002.parquet", "op004.parquet"]
    assert sorted(p.name for p in tmp_path.glob("op*")) == ["op005.parquet"]


def test_key_order_puts_hash_step_between_ops():
    assert CheckpointKey(2) < CheckpointKey(2, hashed=True) < CheckpointKey(3)


def test_temporaries_are_cleaned(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")
    (tmp_path / ".op001.parquet.tmp-123").write_bytes(b"half")
    store.clean_temporaries()
    assert not list(tmp_path.iterdir())
