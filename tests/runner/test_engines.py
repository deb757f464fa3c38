"""The local engine against Ray: the same bytes out, and the same guarantees when killed.

Both engines run the same task body on the same plan, so their outputs must be identical by
construction; these tests check it on every built-in op, several input files, several
partitions, a global op and both export kinds, and check what only the local engine has to
get right itself: its worker processes end with a killed driver, and the resume is exact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dj_runner.contract import ExitCode
from dj_runner.engine.local_backend import INLINE_MAX_BYTES
from dj_runner.observe.status_file import read_status
from tests.harness.proctree import alive, descendants
from tests.harness.waiting import wait_for

from conftest import CORPORA, read_jsonl, run_cli, write_recipe

ALL_BUILTIN_OPS = [
    {"fix_unicode_mapper": {}},
    {"whitespace_normalization_mapper": {}},
    {"punctuation_normalization_mapper": {}},
    {"clean_email_mapper": {}},
    {"clean_links_mapper": {}},
    {"clean_ip_mapper": {}},
    {"remove_specific_chars_mapper": {}},
    {"text_length_filter": {"min_len": 20, "max_len": 50000}},
    {"document_deduplicator": {"lowercase": True}},
    {"words_num_filter": {"min_num": 3, "max_num": 100000}},
    {"alphanumeric_filter": {"min_ratio": 0.2}},
    {"character_repetition_filter": {"rep_len": 10, "max_ratio": 0.6}},
    {"word_repetition_filter": {"rep_len": 10, "max_ratio": 0.6}},
    {"special_characters_filter": {"max_ratio": 0.6}},
    {"average_line_length_filter": {"min_len": 5, "max_len": 5000}},
    {"maximum_line_length_filter": {"max_len": 20000}},
    {"language_id_score_filter": {"min_score": 0.1}},
]


def _events(work: Path, event_type: str) -> list[dict]:
    out = run_cli("events", str(work), "--type", event_type, "--json")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("export", ["out.jsonl", "shards"])
def test_every_builtin_op_gives_the_same_bytes_on_both_engines(tmp_path, export):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("alpaca-cot.jsonl", "redpajama-c4-refined.jsonl", "the-pile-nih-refined.jsonl"):
        (data / name).write_bytes((CORPORA / name).read_bytes())
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine / export
        recipe = write_recipe(
            tmp_path / f"{engine}.yaml",
            project_name="engines",
            dataset_path=str(data),
            export_path=str(out),
            partition_size=7,
            process=ALL_BUILTIN_OPS,
        )
        proc = run_cli("run", str(recipe), "--work-dir", str(tmp_path / engine / "work"),
                       "--engine", engine)  # fmt: skip
        assert proc.returncode == ExitCode.OK, proc.stderr
        files = sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else [out]
        outputs[engine] = {str(p.relative_to(tmp_path / engine)): p.read_bytes() for p in files}
        selected = _events(tmp_path / engine / "work", "engine_selected")
        connected = _events(tmp_path / engine / "work", "ray_connected")
        assert (len(selected), len(connected)) == ((1, 0) if engine == "local" else (0, 1))
    assert outputs["local"] == outputs["ray"]
    assert sum(len(b) for b in outputs["local"].values()) > 1000  # a real, non-empty output


def test_auto_runs_a_small_input_without_ray(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        project_name="auto",
        dataset_path=str(CORPORA / "demo-dataset.jsonl"),
        export_path=str(tmp_path / "out.jsonl"),
        process=[{"whitespace_normalization_mapper": {}}],
    )
    proc = run_cli("run", str(recipe), "--work-dir", str(tmp_path / "work"))
    assert proc.returncode == ExitCode.OK, proc.stderr
    (selected,) = _events(tmp_path / "work", "engine_selected")
    assert selected["engine"] == "local" and "no Ray" in selected["message"]
    assert _events(tmp_path / "work", "ray_connected") == []
    # Ray skipped is the engine ready: status.json says when (the operator's "Ray ready").
    status = read_status(tmp_path / "work")
    assert status is not None and status["engine_ready_at"] is not None
    assert status["started_at"] <= status["engine_ready_at"] <= status["finished_at"]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == len(
        read_jsonl(CORPORA / "demo-dataset.jsonl")
    )


def _big_input(path: Path, marker_row: int) -> int:
    """A JSONL input above the in-driver bound (so a worker pool runs it), built from the
    committed corpus; the record at ``marker_row`` carries the gate's marker."""
    texts = [r["text"] for r in read_jsonl(CORPORA / "python-docs-excerpt.jsonl")]
    rows, size = 0, 0
    with open(path, "w") as fh:
        while size <= INLINE_MAX_BYTES * 1.5:
            text = f"{rows}: {texts[rows % len(texts)]}"
            if rows == marker_row:
                text += " HOLD"
            line = json.dumps({"text": text}) + "\n"
            fh.write(line)
            rows, size = rows + 1, size + len(line)
    return rows


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_local_pool_leaves_no_worker_and_resumes_to_the_same_bytes(tmp_path, sig):
    data = tmp_path / "in.jsonl"
    rows = _big_input(data, marker_row=0)  # the first partition waits at the gate
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    process = [
        {"whitespace_normalization_mapper": {}},
        {"gate_mapper": {"marker": "HOLD", "state_dir": str(gate_dir), "timeout_s": 300.0}},
        {"text_length_filter": {"min_len": 10}},
    ]

    def pool_recipe(name: str) -> Path:
        return write_recipe(
            tmp_path / f"{name}.yaml",
            project_name="pool-kill",
            dataset_path=str(data),
            export_path=str(tmp_path / f"{name}.jsonl"),
            partition_size=max(1, rows // 6),
            process=process,
        )

    recipe = pool_recipe("out")
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "dj_runner.cli", "run", str(recipe), "--work-dir", str(work),
           "--engine", "local"]  # fmt: skip
    driver = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:

        def held() -> bool:
            st = json.loads(run_cli("status", str(work), "--json").stdout or "{}")
            parts = st.get("partitions") or {}
            return bool(parts.get("total")) and parts.get("done") == parts["total"] - 1

        wait_for(held, 120, "every partition but the gated one to finish")
        workers = descendants(driver.pid)
        assert len(workers) >= 2, "the job did not run in a pool of worker processes"
        driver.send_signal(sig)
        if sig == signal.SIGTERM:
            (gate_dir / "open").touch()  # the held task finishes its op, then stops
            assert driver.wait(120) == ExitCode.INTERRUPTED
        else:
            driver.wait(30)
        wait_for(lambda: not any(map(alive, workers)), 30, "the pool's worker processes to end")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    (gate_dir / "open").touch()
    resumed = run_cli("run", str(recipe), "--work-dir", str(work), "--engine", "local")
    assert resumed.returncode == ExitCode.OK, resumed.stderr
    clean = pool_recipe("clean")
    ref = run_cli("run", str(clean), "--work-dir", str(tmp_path / "clean-work"), "--engine", "ray")
    assert ref.returncode == ExitCode.OK, ref.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
    assert os.path.getsize(tmp_path / "out.jsonl") > INLINE_MAX_BYTES
