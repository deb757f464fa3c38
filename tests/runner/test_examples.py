"""The examples under examples/ run as their comments say, from a copy of the repository's
examples/ (their relative paths resolve against the current directory)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dj_runner.contract import ExitCode
from dj_runner.observe.event_log import list_segments, read_events
from dj_runner.recipe.keys import TOP_LEVEL, Key
from dj_runner.store.checkpoint import COMMITS

from conftest import REPO, read_jsonl, run_cli

EXAMPLES = REPO / "examples"


@pytest.fixture
def here(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    return tmp_path


def _names(keys: tuple[Key, ...], prefix: str = ""):
    for k in keys:
        if k.block:
            yield from _names(k.block, f"{k.name}.")
        yield prefix + k.name


def test_comprehensive_config_documents_every_key_and_runs(here):
    path = here / "examples" / "comprehensive_config.yaml"
    text = path.read_text()
    raw = yaml.safe_load(text)
    for name in _names(TOP_LEVEL):
        block, _, leaf = name.rpartition(".")
        if block:  # a block's key: set in the block, or shown commented out below it
            section = text[text.index(f"\n{block}:") :]
            assert re.search(rf"^\s+#?\s*{leaf}:", section, re.M), name
        else:
            assert name in raw, name
    proc = run_cli("run", str(path), cwd=here)
    assert proc.returncode == ExitCode.OK, proc.stderr
    out = read_jsonl(here / "out" / "comprehensive" / "result.jsonl")
    assert 0 < len(out) < 201
    work = here / "out" / "comprehensive" / "work"
    for pdir in (work / "checkpoints").iterdir():
        # retention final: the last checkpoint only, and the full one it selects rows of
        assert sorted(f.name for f in pdir.iterdir() if f.name != COMMITS) == [
            "op004.parquet",
            "op007.parquet",
        ]
    (done,) = read_events(work / "events", event_type="job_complete")
    assert done.get("work_dir_bytes") > 0


def test_event_logging_example_rotates_and_reads_back(here):
    path = here / "examples" / "event_logging_config.yaml"
    proc = run_cli("run", str(path), cwd=here)
    assert proc.returncode == ExitCode.OK, proc.stderr
    work = here / "out" / "event-logging" / "work"
    segments = list_segments(work / "events")
    assert 2 <= len(segments) <= 4 + 1  # rotated; backup_count finished files and the current
    proc = run_cli("events", str(work), "--type", "op_complete", cwd=here)
    assert proc.returncode == ExitCode.OK
    assert "op_complete" in proc.stdout and "text_length_filter" in proc.stdout
    proc = run_cli("report", str(work), cwd=here)
    assert "resources:" in proc.stdout


def test_python_api_example_runs(here):
    work = here / "work"
    proc = subprocess.run(
        [
            sys.executable,
            "examples/python_api.py",
            "--config",
            "examples/recipe.yaml",
            "--work_dir",
            str(work),
        ],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert re.search(r"^\[\d+\.\d{3}\] job_start: ", proc.stdout, re.M)
    assert re.search(r"^\[\d+\.\d{3}\] job_complete: ", proc.stdout, re.M)
    assert re.search(
        r"^text_length_filter: \d+ -> \d+ rows in .* CPU s, peak RSS", proc.stdout, re.M
    )
    assert "Job demo" in proc.stdout and "[succeeded]" in proc.stdout
    assert (here / "out" / "demo" / "result.jsonl").exists()
