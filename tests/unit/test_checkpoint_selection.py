"""Selection checkpoints: after a filter or a deduplicator, a checkpoint holds the rows it keeps
of the last full checkpoint (its base) and its own columns; it reads back as the whole table,
keeps its base from pruning and from retention, and fails verification with a broken base."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dj_runner.engine.apply import merge_stats
from dj_runner.engine.partition_task import CheckpointWriter
from dj_runner.engine.retention import unneeded
from dj_runner.observe.event_log import EventLogger
from dj_runner.ops.common.base import HASH_COLUMN, STATS_COLUMN
from dj_runner.recipe.parse import RetentionConfig
from dj_runner.store.checkpoint import (
    BASE_ROW_COLUMN,
    CheckpointDir,
    CheckpointKey,
    InvalidCheckpoint,
    Lineage,
    selection_pays,
)
from dj_runner.store.workdir import WorkDir

TEXT = "text"


def base_table(n: int = 200) -> pa.Table:
    return pa.table(
        {
            TEXT: [f"sample {i} " + "x" * (200 + i % 50) for i in range(n)],
            "meta": [{"source": f"s{i % 3}", "tags": [i, i + 1]} for i in range(n)],
            "n": pa.array(range(n), type=pa.int32()),
        }
    )


def filtered(table: pa.Table, lineage: Lineage, keep_every: int) -> tuple[pa.Table, Lineage]:
    """What a filter does: its stats merged in, the rows out of range dropped."""
    stat = pa.array([float(i) for i in range(table.num_rows)])
    mask = pc.not_equal(pc.bit_wise_and(pa.array(range(table.num_rows)), keep_every - 1), 1)
    out = merge_stats(table, {f"s{keep_every}": stat}).filter(mask)
    return out, lineage.kept(mask).changed([STATS_COLUMN])


@pytest.mark.parametrize(
    ("fmt", "comp"), [("parquet", "snappy"), ("arrow", "lz4"), ("jsonl", "none")]
)
def test_a_selection_reads_back_as_the_table_it_saved(tmp_path, fmt, comp):
    store = CheckpointDir(tmp_path, fmt, comp)
    table = base_table()
    c1 = store.save(CheckpointKey(1), table, "mapper")
    t2, lineage = filtered(table, Lineage.of_full(c1.key, table), 2)
    t3, lineage = filtered(t2, lineage, 4)
    assert selection_pays(lineage, t3)
    c3 = store.save(CheckpointKey(3), t3, "filter", base=(c1, lineage))
    assert c3.selection is not None
    assert (c3.selection.base_file, c3.selection.base_sha256) == (c1.file, c1.sha256)
    assert c3.selection.own == (STATS_COLUMN,)
    assert c3.files == (c3.file, c1.file)
    assert c3.bytes < c1.bytes / 2  # the text is not written again
    assert store.load(c3).equals(t3)
    assert store.load(c3, ["n", STATS_COLUMN]).equals(t3.select(["n", STATS_COLUMN]))
    assert store.schema(c3) == t3.schema
    sliced = list(store.iter_slices(c3, rows=30))
    assert pa.concat_tables(sliced).equals(t3) and max(len(s) for s in sliced) == 30
    # the record says all of it: a reader of the commit log alone finds the base
    (again,) = [c for c in store.commits() if c.key == c3.key]
    assert again == c3


def test_pruning_keeps_the_base_until_a_newer_full_checkpoint(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")
    table = base_table()
    c1 = store.save(CheckpointKey(1), table, "mapper")
    lineage = Lineage.of_full(c1.key, table)
    t2, lineage = filtered(table, lineage, 2)
    c2 = store.save(CheckpointKey(2), t2, "f", base=(c1, lineage))
    t3, lineage = filtered(t2, lineage, 4)
    c3 = store.save(CheckpointKey(3), t3, "f", base=(c1, lineage))
    assert sorted(p.name for p in tmp_path.glob("op*")) == sorted([c1.file, c3.file])
    assert not (tmp_path / c2.file).exists()
    c4 = store.save(CheckpointKey(4), t3, "mapper")  # whole again: the old base goes
    assert [p.name for p in tmp_path.glob("op*")] == [c4.file]


def test_a_selection_whose_base_is_broken_is_invalid_and_reported(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")
    table = base_table()
    c1 = store.save(CheckpointKey(1), table, "mapper")
    t2, lineage = filtered(table, Lineage.of_full(c1.key, table), 2)
    c2 = store.save(CheckpointKey(2), t2, "f", base=(c1, lineage))
    path = tmp_path / c1.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    # verifying the selection verifies its base (the check before an export relies on it)
    with pytest.raises(InvalidCheckpoint, match=r"its base .*checksum"):
        store.verify(c2)
    reasons: list[tuple[str, str]] = []
    assert store.newest_valid(on_invalid=lambda c, r: reasons.append((c.file, r))) is None
    # the selection is reported (its base was not pruned on purpose), then the base itself
    assert [f for f, _ in reasons] == [c2.file, c1.file]
    assert "its base" in reasons[0][1] and "checksum" in reasons[0][1]


def test_a_resumed_selection_goes_on_selecting_from_its_base(tmp_path):
    store = CheckpointDir(tmp_path, "arrow", "lz4")
    table = base_table()
    c1 = store.save(CheckpointKey(1), table, "mapper")
    t2, lineage = filtered(table, Lineage.of_full(c1.key, table), 2)
    store.save(CheckpointKey(2), t2, "f", base=(c1, lineage))
    # a new process resumes: the newest checkpoint, and how it derives from its base
    fresh = CheckpointDir(tmp_path, "arrow", "lz4")
    commit, loaded = fresh.newest_valid()
    assert loaded.equals(t2)
    base, resumed = fresh.lineage_of(commit, loaded)
    assert base == c1 and resumed.base_key == c1.key
    assert resumed.rows.equals(lineage.rows) and resumed.own == lineage.own
    # with a hash column added and a decision applied, as a deduplicator does
    hashed = loaded.append_column(HASH_COLUMN, pa.array([f"h{i % 7}" for i in range(len(loaded))]))
    resumed = resumed.changed([HASH_COLUMN])
    c3 = fresh.save(CheckpointKey(2, hashed=True), hashed, "dedup", base=(base, resumed))
    assert c3.selection.own == (STATS_COLUMN, HASH_COLUMN)
    assert fresh.load(c3).equals(hashed)
    mask = pa.array([i % 3 != 0 for i in range(len(hashed))])
    t4 = hashed.filter(mask).drop_columns([HASH_COLUMN])
    after = resumed.kept(mask, dropped=[HASH_COLUMN])
    c4 = fresh.save(CheckpointKey(3), t4, "dedup", base=(base, after))
    assert fresh.load(c4).equals(t4)
    assert sorted(p.name for p in tmp_path.glob("op*")) == sorted([c1.file, c4.file])
    # and a resume from a full checkpoint selects from that checkpoint
    assert fresh.lineage_of(c1, table) == (c1, Lineage.of_full(c1.key, table))


def test_when_a_selection_pays():
    table = base_table()
    lineage = Lineage.of_full(CheckpointKey(1), table)
    t2, after_filter = filtered(table, lineage, 2)
    assert selection_pays(after_filter, t2)
    assert not selection_pays(None, t2)  # an op that may have changed anything came between
    # a mapper rewrote the text: the own columns are most of the bytes
    rewritten = t2.set_column(0, TEXT, pc.utf8_upper(t2.column(TEXT)))
    assert not selection_pays(after_filter.changed([TEXT]), rewritten)
    # a column not own whose type is no longer the base's
    retyped = t2.set_column(2, "n", t2.column("n").cast(pa.int64()))
    assert not selection_pays(after_filter, retyped)
    # a column the base does not have, not declared own
    assert not selection_pays(after_filter, t2.append_column("extra", pa.nulls(len(t2))))
    # a table that holds the row-index column's name already
    clash = t2.append_column(BASE_ROW_COLUMN, pa.nulls(len(t2), pa.uint32()))
    assert not selection_pays(after_filter.changed([BASE_ROW_COLUMN]), clash)


def test_the_writer_saves_selections_from_the_last_full_checkpoint(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy", preserve=True)
    events = EventLogger(WorkDir(tmp_path).events_dir, "job")
    table = base_table()
    with CheckpointWriter(store, events, 0) as saver:
        lineage = saver.save(CheckpointKey(1), table, "mapper", None)  # no lineage: whole
        assert lineage == Lineage.of_full(CheckpointKey(1), table)
        t2, lineage = filtered(table, lineage, 2)
        assert saver.save(CheckpointKey(2), t2, "filter", lineage) == lineage
        rewritten = t2.set_column(0, TEXT, pc.utf8_upper(t2.column(TEXT)))
        after_mapper = saver.save(CheckpointKey(3), rewritten, "mapper", lineage.changed([TEXT]))
        assert after_mapper == Lineage.of_full(CheckpointKey(3), rewritten)
        t4, lineage = filtered(rewritten, after_mapper, 4)
        saver.save(CheckpointKey(4), t4, "filter", lineage)
    commits = {c.key.step: c for c in store.commits()}
    assert [commits[s].selection is None for s in (1, 2, 3, 4)] == [True, False, True, False]
    assert commits[2].selection.base_file == commits[1].file
    assert commits[4].selection.base_file == commits[3].file
    assert store.load(commits[2]).equals(t2) and store.load(commits[4]).equals(t4)
    events.close()


def test_retention_keeps_the_final_selections_base(tmp_path):
    work = WorkDir(tmp_path / "w")
    store = CheckpointDir(work.checkpoints_dir / "p00000", "parquet", "snappy", preserve=True)
    table = base_table()
    c1 = store.save(CheckpointKey(1), table, "mapper")
    t2, lineage = filtered(table, Lineage.of_full(c1.key, table), 2)
    c2 = store.save(CheckpointKey(2), t2, "f", base=(c1, lineage))
    c3 = store.save(CheckpointKey(3), t2, "f", base=(c1, lineage))
    found = unneeded(work, RetentionConfig("final", None, None), True, None, leftovers=False)
    assert [e.path for e in found] == [f"checkpoints/p00000/{c2.file}"]
    assert store.load(c3).equals(t2)


@pytest.mark.parametrize(
    ("fmt", "comp"), [("parquet", "snappy"), ("arrow", "lz4"), ("jsonl", "none")]
)
@pytest.mark.parametrize("hashed_whole", [False, True])
def test_a_decision_is_committed_from_the_hashed_checkpoints_own_file(
    tmp_path, fmt, comp, hashed_whole
):
    """``select``: a deduplicator's decision applied to its hashed checkpoint without reading
    the texts gives the table the op chain gives (the rows kept, the hash column dropped), a
    selection of the same base (of the hashed checkpoint, when that one is whole), and prunes
    as a save would."""
    store = CheckpointDir(tmp_path, fmt, comp)
    table = base_table()
    c1 = store.save(CheckpointKey(1), table, "mapper")
    t2, lineage = filtered(table, Lineage.of_full(c1.key, table), 2)
    hashed = t2.append_column(HASH_COLUMN, pa.array([f"h{i % 7}" for i in range(len(t2))]))
    key = CheckpointKey(2, hashed=True)
    if hashed_whole:
        c2 = store.save(key, hashed, "dedup")
    else:
        c2 = store.save(key, hashed, "dedup", base=(c1, lineage.changed([HASH_COLUMN])))
    assert (c2.selection is None) is hashed_whole
    mask = pa.array([i % 3 != 0 for i in range(len(hashed))])
    # the base's text is never read: damaging it does not stop the selection (only its
    # later readers, which verify it)
    if not hashed_whole:
        (tmp_path / c1.file).write_bytes(b"not a checkpoint")
    c3 = store.select(c2, mask, CheckpointKey(3), "dedup", drop=[HASH_COLUMN])
    want = hashed.filter(mask).drop_columns([HASH_COLUMN])
    assert c3.rows == want.num_rows and c3.selection is not None
    base = c2 if hashed_whole else c1
    assert (c3.selection.base_file, c3.selection.base_sha256) == (base.file, base.sha256)
    assert store.schema(c3) == want.schema
    present = sorted(p.name for p in tmp_path.glob("op*"))
    assert present == sorted({base.file, c3.file})  # the hashed one pruned unless it is base
    if hashed_whole:
        assert store.load(c3).equals(want)
        (again,) = [c for c in store.commits() if c.key == c3.key]
        assert again == c3
    else:
        with pytest.raises(InvalidCheckpoint, match="its base"):
            store.load(c3)


def test_a_decision_is_not_committed_from_a_damaged_or_mismatched_checkpoint(tmp_path):
    store = CheckpointDir(tmp_path, "parquet", "snappy")
    table = base_table(20).append_column(HASH_COLUMN, pa.array(["h"] * 20))
    c1 = store.save(CheckpointKey(1, hashed=True), table, "dedup")
    with pytest.raises(ValueError, match="mask of 3 values for 20 rows"):
        store.select(c1, pa.array([True] * 3), CheckpointKey(2), "dedup", [HASH_COLUMN])
    (tmp_path / c1.file).write_bytes(b"x" * c1.bytes)
    with pytest.raises(InvalidCheckpoint, match="checksum"):
        store.select(c1, pa.array([True] * 20), CheckpointKey(2), "dedup", [HASH_COLUMN])
    assert [c.key for c in store.commits()] == [c1.key]  # nothing committed
