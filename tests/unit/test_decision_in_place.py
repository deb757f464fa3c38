"""The last op's decision applied in place (``decision_in_place``): a partition whose newest
checkpoint is the hashed one of a final deduplicator reaches its final checkpoint from that
file alone; one whose hashed checkpoint is damaged is recomputed by the ops, as ever. Either
way the final table is the one the op chain gives."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from dj_runner.engine.apply import apply_local
from dj_runner.engine.global_decisions import GlobalDecision, save_decision
from dj_runner.engine.partition_task import in_place_target, run_partition
from dj_runner.io.sources import list_sources
from dj_runner.observe.event_log import EventLogger, read_events
from dj_runner.plan.partitioner import build_plan
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.checkpoint import CheckpointKey, partition_store
from dj_runner.store.workdir import WorkDir


def _recipe(tmp: Path, process: list) -> object:
    data = tmp / "in.jsonl"
    texts = [f"sample {i % 9} " + "words " * (i % 5 + 2) for i in range(60)]
    data.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    return parse_recipe(
        {
            "dataset_path": str(data),
            "export_path": str(tmp / "out.jsonl"),
            "partition_size": 20,
            "process": process,
        }
    )


def test_the_final_deduplicators_decision_is_applied_in_place(tmp_path):
    process = [{"text_length_filter": {"min_len": 12}}, {"document_deduplicator": {}}]
    recipe = _recipe(tmp_path, process)
    assert in_place_target(recipe, CheckpointKey(2)) == 1
    assert in_place_target(recipe, CheckpointKey(1, hashed=True)) is None
    plan = build_plan(list_sources(recipe.dataset_path), recipe.partition, 1)
    work = WorkDir(tmp_path / "work")
    events = EventLogger(work.events_dir, "job")
    hashed, final = CheckpointKey(1, hashed=True), CheckpointKey(2)
    for part in plan.partitions:
        assert (
            run_partition(work, recipe, part, plan.sources, hashed, 0, events).final_key == hashed
        )
    op = recipe.process[1].op
    stores = {p.pid: partition_store(work, p.pid, recipe.checkpoint) for p in plan.partitions}
    masks = op.decide(
        (pid, s.load(s.latest_commit(hashed), list(op.signature_columns)))
        for pid, s in stores.items()
    )
    save_decision(work, 1, "document_deduplicator", GlobalDecision(masks), None)
    hashed_bytes = {pid: s.latest_commit(hashed).bytes for pid, s in stores.items()}
    # partition 0's hashed checkpoint is damaged: its task recomputes it from the source
    broken = stores[0].latest_commit(hashed)
    (stores[0].dir / broken.file).write_bytes(b"x" * broken.bytes)
    results = {
        p.pid: run_partition(work, recipe, p, plan.sources, final, 0, events)
        for p in plan.partitions
    }
    events.close()
    assert results[0].resumed_from != hashed.label
    assert all(results[p].resumed_from == hashed.label for p in (1, 2))
    # the ops' own answer, partition by partition
    source = pa.Table.from_pylist([json.loads(line) for line in open(recipe.dataset_path)])
    for part in plan.partitions:
        rows = source.slice(part.pid * 20, 20)
        kept = apply_local(recipe.process[0].op, rows, "text")
        want = kept.filter(masks[part.pid]).select(["text", "n"])
        commit = stores[part.pid].latest_commit(final)
        got = stores[part.pid].load(commit).select(["text", "n"])
        assert got.equals(want) and results[part.pid].rows_out == want.num_rows
        assert commit.selection is not None
    logged = read_events(work.events_dir)
    invalid = [e for e in logged if e.event_type == "checkpoint_invalid"]
    assert [e.partition_id for e in invalid] == [0]
    # in place, partitions 1 and 2 read their hashed checkpoint's own file, not its base
    loads = {e.partition_id: e for e in logged if e.event_type == "checkpoint_load"}
    assert all(loads[p].get("checkpoint_bytes") == hashed_bytes[p] for p in (1, 2))
    # one op_complete for the decision each
    applied = [
        e.partition_id
        for e in logged
        if e.event_type == "op_complete" and e.operation_name == "document_deduplicator"
    ]
    assert sorted(applied) == [0, 1, 2]


def test_a_deduplicator_before_other_ops_is_not_applied_in_place(tmp_path):
    recipe = _recipe(
        tmp_path, [{"document_deduplicator": {}}, {"text_length_filter": {"min_len": 12}}]
    )
    assert in_place_target(recipe, CheckpointKey(2)) is None
    assert in_place_target(recipe, CheckpointKey(1)) is None
