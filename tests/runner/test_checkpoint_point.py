"""status.json's `checkpoint`: where a resume starts (the newest stage with committed
checkpoints), written as partitions commit and found again by the run that resumes."""

from __future__ import annotations

from pathlib import Path

from dj_runner.contract import ExitCode
from dj_runner.observe.status_file import read_status

from conftest import DEMO, STANDARD_OPS, run_cli, write_recipe


def test_the_checkpoint_point_is_the_last_op_over_every_partition(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(DEMO),
        export_path=str(tmp_path / "out.jsonl"),
        partition_size=100,
        engine="local",
        process=STANDARD_OPS,
    )
    work = tmp_path / "work"
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.OK, proc.stderr
    done = read_status(work)
    assert done is not None
    total = done["partitions"]["total"]
    assert total > 1
    point = done["checkpoint"]
    assert point["partitions_committed"] == point["partitions_total"] == total
    assert point["ops_done"] == len(STANDARD_OPS)
    assert point["op"] == "document_deduplicator"
    assert point["at"] == done["last_checkpoint_at"]
    # A rerun finds the same point in the work dir before it does anything.
    again = run_cli("run", str(recipe), "--work-dir", str(work))
    assert again.returncode == ExitCode.OK, again.stderr
    resumed = read_status(work)
    assert resumed is not None and resumed["run_id"] != done["run_id"]
    assert resumed["checkpoint"]["partitions_committed"] == total
    assert resumed["checkpoint"]["ops_done"] == len(STANDARD_OPS)
    assert resumed["checkpoint"]["at"] is None  # committed by the earlier run
