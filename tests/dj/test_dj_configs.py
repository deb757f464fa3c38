"""Data-Juicer's own configs (tests/data/dj/configs, copied unchanged with their license), run
as written: the output equals Data-Juicer's own executor's, and every key Data-Juicer knows is
either honoured or accepted with a notice naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dj.conftest import HERE, NEEDS_DJ, read_jsonl

pytest.importorskip("data_juicer", reason=NEEDS_DJ)

CONFIGS = HERE.parent / "data" / "dj" / "configs"
REDPAJAMA = HERE.parent / "data" / "corpora" / "redpajama-c4-refined.jsonl"


def runner(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dj_runner.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_hpo_process_config_runs_as_written_like_data_juicer(tmp_path):
    dirs = {}
    for who in ("ours", "theirs"):
        d = dirs[who] = tmp_path / who
        d.mkdir()
        shutil.copy(CONFIGS / "hpo-process.yaml", d)
        shutil.copy(REDPAJAMA, d / "demo-redpajama-c4-refined.jsonl")
    proc = runner("run", "hpo-process.yaml", cwd=dirs["ours"])
    assert proc.returncode == 0, proc.stderr
    dj = subprocess.run(
        [sys.executable, str(HERE / "dj_reference.py"), "--config", "hpo-process.yaml"],
        cwd=dirs["theirs"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert dj.returncode == 0, dj.stderr[-4000:]
    out = Path("outputs") / "demo-hpo-process" / "demo-hpo-processed.jsonl"
    ours = [r["text"] for r in read_jsonl(dirs["ours"] / out)]
    theirs = [r["text"] for r in read_jsonl(dirs["theirs"] / out)]
    assert ours == theirs and len(ours) > 0


def test_config_min_keys_are_accepted_with_notices_naming_them(tmp_path):
    """config_min.yaml names no dataset or ops (Data-Juicer takes them from its command
    line): with those two keys added, each of its keys is honoured or named in a notice."""
    text = (CONFIGS / "config_min.yaml").read_text()
    shutil.copy(REDPAJAMA, tmp_path / "in.jsonl")
    (tmp_path / "min.yaml").write_text(
        text + "\ndataset_path: in.jsonl\nprocess:\n  - text_length_filter:\n"
    )
    proc = runner("validate", "min.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for key in ("video_key", "image_key", "audio_key", "suffixes", "executor_type"):
        assert f"note: {key}: " in proc.stderr, key
    proc = runner("run", "min.yaml", "--work-dir", "work", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "outputs").glob("part-*"))) >= 1  # export_path './outputs/'
