"""A runner frozen mid-job (SIGSTOP) while a newer run takes the work dir over, as a runner on a
node cut off from its cluster: on a volume shared by hosts the `flock` of one host does not
exclude another's runner, only the claims do. Once it runs again it commits nothing, exits
superseded (exit 5) at its next commit, and leaves status.json and result.json to the newer run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dj_runner.contract import ExitCode
from dj_runner.engine.executor import Executor
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.atomic import read_records
from dj_runner.store.fencing import fenced, read_claim, take_claim
from dj_runner.store.workdir import WorkDir
from tests.harness.waiting import wait_for

from conftest import DEMO, STANDARD_OPS, run_cli, write_recipe

#: The old runner must notice it was superseded at its next commit: the op it is in (at most
#: one slow_mapper call) and the save's claim check, well within this.
EXIT_BOUND_S = 60.0


def commit_records(work: Path) -> dict[str, list[dict[str, Any]]]:
    """Every partition's commit log, by partition directory name."""
    logs = sorted(WorkDir(work).checkpoints_dir.glob("p*/commits.jsonl"))
    return {p.parent.name: read_records(p) for p in logs}


def stopped(pid: int) -> bool:
    """Whether `pid` is stopped by a signal (state T in /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def frozen_recipe(where: Path) -> Path:
    """Five partitions, each a second in its first op; the output in `where`."""
    return write_recipe(
        where / "recipe.yaml",
        project_name="frozen",
        dataset_path=str(DEMO),
        export_path=str(where / "out.jsonl"),
        partition_size=50,
        max_retries=0,
        process=[{"slow_mapper": {"seconds": 1.0}}, *STANDARD_OPS],
    )


def test_a_frozen_runner_superseded_meanwhile_commits_nothing_and_leaves_the_status(
    tmp_path: Path,
) -> None:
    recipe = frozen_recipe(tmp_path)
    work = tmp_path / "work"
    reference = tmp_path / "reference"
    reference.mkdir()
    done = run_cli("run", str(frozen_recipe(reference)), "--work-dir", str(reference / "work"))
    assert done.returncode == ExitCode.OK, done.stderr

    cmd = [sys.executable, "-m", "dj_runner.cli", "run", str(recipe), "--work-dir", str(work)]
    log = tmp_path / "old.log"
    with log.open("w") as out:
        old = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_for(
            lambda: any(commit_records(work).values()) or old.poll() is not None,
            120,
            "the first run's first commit",
        )
        assert old.poll() is None, log.read_text()
        os.killpg(old.pid, signal.SIGSTOP)
        wait_for(lambda: stopped(old.pid), 10, "the first run stopped")
        old_claim = read_claim(work)
        assert old_claim is not None and old_claim["epoch"] == 1
        at_freeze = commit_records(work)
        # Another host's runner: its flock is not this one's. Here both share a kernel, so the
        # lock file the frozen runner holds is replaced (a new file, a lock of its own).
        WorkDir(work).lock_path.unlink()

        new = run_cli("run", str(recipe), "--work-dir", str(work))
        assert new.returncode == ExitCode.OK, new.stderr
        new_claim = read_claim(work)
        assert new_claim is not None and new_claim["epoch"] == 2
        status_before = json.loads(WorkDir(work).status_path.read_text())
        result_before = json.loads(WorkDir(work).result_path.read_text())
        assert status_before["run_id"] == new_claim["run_id"]
        assert status_before["state"] == "succeeded"

        os.killpg(old.pid, signal.SIGCONT)
        old.wait(timeout=EXIT_BOUND_S)
    finally:
        if old.poll() is None:
            os.killpg(old.pid, signal.SIGKILL)
            old.wait(timeout=30)
    said = log.read_text()
    assert old.returncode == ExitCode.LOCKED, said
    assert f"superseded by run {new_claim['run_id']}" in said, said
    assert "a newer run owns the work dir" in said and "resume with the same" not in said, said
    # Not one commit of the old epoch after the freeze counts. The writer's check of its claim
    # and its append are two steps (store/fencing.py, "Limits"): frozen between them, the old
    # run appends that one record when let go, after the newer epoch's records, so that
    # readers ignore it (`fenced`). At most one such record a partition, and none that counts.
    for part, records in commit_records(work).items():
        epoch = old_claim["epoch"]
        before = [r for r in at_freeze.get(part, []) if r.get("epoch") == epoch]
        old_records = [r for r in records if r.get("epoch") == epoch]
        assert old_records[: len(before)] == before and len(old_records) <= len(before) + 1, part
        assert [r for r in fenced(records, None) if r.get("epoch") == epoch] == before, part
    # The newer run's status and result stand (the old run's end is not written over them).
    assert json.loads(WorkDir(work).status_path.read_text()) == status_before
    assert json.loads(WorkDir(work).result_path.read_text()) == result_before
    assert (tmp_path / "out.jsonl").read_bytes() == (reference / "out.jsonl").read_bytes()


@pytest.mark.parametrize("at", ["_repair_final", "_export"])
def test_a_run_superseded_before_its_export_or_retention_writes_neither(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    """Every final checkpoint is committed, then a newer run claims the work dir (the old run
    was cut off or frozen meanwhile): the old run neither exports nor removes checkpoints."""
    work = tmp_path / "work"
    real = getattr(Executor, at)

    def then_superseded(self: Executor, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        take_claim(work, "a-newer-run")
        return out

    monkeypatch.setattr(Executor, at, then_superseded)
    recipe = parse_recipe(
        {
            "project_name": "superseded",
            "dataset_path": str(DEMO),
            "export_path": str(tmp_path / "out.jsonl"),
            "partition_size": 50,
            "process": STANDARD_OPS,
            # Every op's checkpoint kept while the job runs; a success removes all but the last.
            "preserve_intermediate_data": True,
            "retention": {"checkpoints": "final"},
        }
    )
    result = Executor(recipe, work_dir=work, engine="local").run()
    assert result.exit_code == ExitCode.LOCKED, result.error
    assert "superseded by run a-newer-run" in (result.error or "")
    if at == "_repair_final":
        assert not (tmp_path / "out.jsonl").exists()
    files = list(WorkDir(work).checkpoints_dir.glob("p*/*.parquet"))
    assert len(files) > len(commit_records(work)), "retention removed checkpoints"
