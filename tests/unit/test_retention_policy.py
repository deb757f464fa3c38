"""Which event-log files of earlier runs the retention limits list, on real files: the age
limit first, then the count over what the age limit kept; the last run's files never."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dj_runner.engine.retention import unneeded
from dj_runner.recipe.parse import RetentionConfig
from dj_runner.store.workdir import WorkDir

NOW = 2_000_000_000.0
DAY = 86400.0


def segments(root: Path, ages_days: list[float]) -> WorkDir:
    """One finished segment per age, each of its own writer, written that many days ago."""
    work = WorkDir(root)
    work.events_dir.mkdir(parents=True)
    for i, age in enumerate(ages_days):
        path = work.events_dir / f"events-host-{i}-abc{i}-000001.jsonl"
        path.write_text('{"event_type": "job_start"}\n' * (i + 1))
        os.utime(path, (NOW - age * DAY, NOW - age * DAY))
    return work


@pytest.mark.parametrize(
    ("age", "count", "gone"),
    [
        (None, None, []),
        (5.0, None, [3, 4]),  # older than 5 days
        (None, 2, [2, 3, 4]),  # beyond the newest 2 (of 0, 1, 2, 3, 4)
        (9.0, 1, [1, 2, 3, 4]),  # 4 is too old; of the rest, 0 alone is kept
        (5.0, 2, [2, 3, 4]),  # 3 and 4 are too old; of the rest, 0 and 1 are kept
    ],
)
def test_age_then_count(tmp_path, age, count, gone):
    work = segments(tmp_path, [1, 2, 3, 6, 10])
    policy = RetentionConfig("all", age, count)
    found = unneeded(work, policy, succeeded=True, last_run_started=NOW - 0.5 * DAY, now=NOW)
    names = sorted(e.path for e in found)
    assert names == [f"events/events-host-{i}-abc{i}-000001.jsonl" for i in gone]
    for e in found:
        assert e.bytes == (work.root / e.path).stat().st_size


def test_the_last_runs_files_are_never_listed(tmp_path):
    work = segments(tmp_path, [1, 2, 30])
    found = unneeded(
        work, RetentionConfig("all", 0.001, 0), True, last_run_started=NOW - 40 * DAY, now=NOW
    )
    assert found == []  # every file was written since the last run began


def test_remove_refuses_a_path_outside_the_work_dir(tmp_path):
    work = WorkDir(tmp_path / "w")
    (tmp_path / "w").mkdir()
    (tmp_path / "keep").write_text("x")
    for bad in ("../keep", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="inside the work dir"):
            work.remove([bad])
    assert (tmp_path / "keep").exists()
