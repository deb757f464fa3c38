"""Global-op decisions (keep-first across partitions, committed in the work dir), rejects, and
the work dir's paths."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from dj_runner import contract
from dj_runner.engine.global_decisions import (
    GlobalDecision,
    read_decision,
    removed,
    save_decision,
)
from dj_runner.engine.partition_task import count_rejects, write_rejects
from dj_runner.io.sources import Malformed
from dj_runner.ops.common.keep_first import first_occurrence
from dj_runner.store.workdir import WorkDir


def _first(hashes):
    return first_occurrence(
        ((pid, pa.table({"h": pa.array(h, pa.string())})) for pid, h in hashes), "h"
    )


def test_keep_first_occurrence_across_partitions_in_plan_order() -> None:
    masks = _first([(0, ["a", "b", "a"]), (1, ["b", "c"]), (2, [])])
    assert {p: m.to_pylist() for p, m in masks.items()} == {
        0: [True, True, False],
        1: [False, True],
        2: [],
    }
    assert removed(masks) == 2


def test_global_decision_round_trips(tmp_path: Path) -> None:
    work = WorkDir(tmp_path)
    decision = GlobalDecision(_first([(0, ["a", "a"]), (1, ["b"])]))
    save_decision(work, 3, "document_deduplicator", decision, None)
    assert work.global_dir(3).is_dir()
    back = read_decision(work, 3, None)
    assert back is not None
    assert back.mask_for(0).to_pylist() == [True, False] and back.mask_for(1).to_pylist() == [True]
    assert read_decision(work, 4, None) is None


def test_count_rejects_and_progress(tmp_path: Path) -> None:
    work = WorkDir(tmp_path)
    assert count_rejects(work, 0) == 0 and not work.has_progress()
    bad = [Malformed("in.jsonl", n, "not JSON", "{") for n in (2, 3)]
    write_rejects(work, 0, bad)
    assert count_rejects(work, 0) == 2
    work.plan_path.write_text("{}")
    assert work.has_progress()
    work.wipe(keep_events=True)
    assert not work.has_progress() and count_rejects(work, 0) == 0


def test_every_path_is_a_contract_name_under_the_root(tmp_path: Path) -> None:
    work = WorkDir(tmp_path)
    assert work.status_path == tmp_path.resolve() / contract.STATUS_FILE
    assert work.manifest_path.name == contract.JOB_FILE
    assert work.plan_path.name == contract.PLAN_FILE
    assert work.claim_path.name == contract.CLAIM_FILE
    assert work.lock_path.name == contract.LOCK_FILE
    assert work.events_dir.name == contract.EVENTS_DIR
    assert work.checkpoint_dir(7).relative_to(work.root).as_posix() == "checkpoints/p00007"
    assert work.global_dir(2).relative_to(work.root).as_posix() == "global/op002"
    assert work.rejects_path(3).relative_to(work.root).as_posix() == "rejects/p00003.jsonl"
    assert work.stop_path("r1").name == contract.STOP_FILE_PREFIX + "r1"
    assert not work.is_work_dir()
    work.status_path.write_text("{}")
    assert work.is_work_dir()
