"""Global-op decisions (keep-first across partitions) and the work dir's small state."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from dj_runner.engine.global_decisions import first_occurrence, removed
from dj_runner.store.workdir import GlobalDecision, WorkDir


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
    work.save_global_decision(3, "document_deduplicator", decision)
    back = work.global_decision(3)
    assert back is not None
    assert back.mask_for(0).to_pylist() == [True, False] and back.mask_for(1).to_pylist() == [True]
    assert work.global_decision(4) is None


def test_count_rejects_and_progress(tmp_path: Path) -> None:
    work = WorkDir(tmp_path)
    assert work.count_rejects(0) == 0 and not work.has_progress()
    work.rejects_path(0).write_text('{"line": 2}\n{"line": 3}\n')
    assert work.count_rejects(0) == 2
    work.plan_path.write_text("{}")
    assert work.has_progress()
    work.wipe(keep_events=True)
    assert not work.has_progress() and work.count_rejects(0) == 0
