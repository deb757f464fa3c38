"""SIGKILL at random moments during a recipe that mixes built-in and Data-Juicer ops,
MinHash deduplication included, then resume: the output is byte-identical to a clean run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dj_runner.observe.event_log import read_events
from dj_runner.store.atomic import read_records
from dj_runner.store.workdir import WorkDir
from tests.dj.conftest import CORPUS, EDGE_CASES, NEEDS_DJ, read_jsonl
from tests.harness.waiting import wait_for

pytest.importorskip("data_juicer", reason=NEEDS_DJ)

MIXED_OPS = [
    {"whitespace_normalization_mapper": {}},  # built-in
    {"remove_long_words_mapper": {"min_len": 1, "max_len": 40}},  # Data-Juicer only
    {"text_length_filter": {"min_len": 30}},  # built-in
    {"document_minhash_deduplicator": {}},  # Data-Juicer, global
    {"words_num_filter": {"min_num": 5, "op_implementation": "data_juicer"}},
    {"document_deduplicator": {}},  # built-in, global
]


def commit_count(work: Path) -> int:
    return sum(len(read_records(p)) for p in WorkDir(work).checkpoints_dir.glob("p*/commits.jsonl"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dj_runner.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus four times over, every other copy with a changed ending: exact and near
    duplicates spread over the partitions."""
    rows = read_jsonl(CORPUS) + read_jsonl(EDGE_CASES)
    out = []
    for copy in range(4):
        for row in rows:
            text = row["text"] + (f" (copy {copy})" if copy % 2 else "")
            out.append(json.dumps({**row, "text": text}, ensure_ascii=False))
    path = tmp_path_factory.mktemp("dj-kill") / "data.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


def recipe(tmp: Path, data: Path) -> Path:
    path = tmp / "recipe.yaml"
    raw = {
        "project_name": "dj-kill",
        "dataset_path": str(data),
        "export_path": str(tmp / "out.jsonl"),
        "partition_size": 25,
        "max_retries": 0,
        "np": 2,
        "process": MIXED_OPS,
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def clean_output(tmp_path_factory: pytest.TempPathFactory, data: Path) -> bytes:
    tmp = tmp_path_factory.mktemp("dj-clean")
    proc = run_cli("run", str(recipe(tmp, data)), "--work-dir", str(tmp / "work"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = (tmp / "out.jsonl").read_bytes()
    rows = out.count(b"\n")
    assert 0 < rows < 4 * 102 / 2  # the deduplicators removed the copies
    return out


def test_sigkill_mixed_builtin_and_dj_ops_then_resume_is_identical(
    tmp_path: Path, data: Path, clean_output: bytes
):
    path = recipe(tmp_path, data)
    work = tmp_path / "work"
    rng = random.Random(20261130)
    kills = 0
    for attempt in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "dj_runner.cli", "run", str(path), "--work-dir", str(work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        before = commit_count(work) if work.exists() else 0
        if attempt % 2 == 0:  # after a random number of new commits
            target = before + rng.randint(1, 15)
            wait_for(
                lambda t=target, p=proc: commit_count(work) >= t or p.poll() is not None,
                300,
                "checkpoint commits",
            )
        else:  # at a random instant once this run has committed something
            wait_for(
                lambda b=before, p=proc: commit_count(work) > b or p.poll() is not None,
                300,
                "the first commit of this run",
            )
            deadline = time.monotonic() + rng.uniform(0.0, 2.0)
            wait_for(
                lambda d=deadline, p=proc: time.monotonic() >= d or p.poll() is not None,
                5,
                "the kill instant",
                interval=0.01,
            )
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if proc.returncode == 0:
            break
    assert kills >= 3
    final = run_cli("run", str(path), "--work-dir", str(work))
    assert final.returncode == 0, final.stderr[-3000:]
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output
    events = WorkDir(work).events_dir
    assert read_events(events, event_type="checkpoint_load")
    decided = {
        e.get("operation_name") for e in read_events(events, event_type="global_op_complete")
    }
    assert decided == {"document_minhash_deduplicator", "document_deduplicator"}
