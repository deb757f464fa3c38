"""The runner never destroys a user's files, never mixes stale state into output, and answers
bad input and inspection commands with a clear error and exit code (issues 7 and 8)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dj_runner.contract import ExitCode
from dj_runner.io.sources import list_sources
from dj_runner.plan.partitioner import build_plan
from dj_runner.recipe.parse import PartitionConfig
from dj_runner.store.workdir import WorkDir

from conftest import DEMO, STANDARD_OPS, read_jsonl, reference_texts, run_cli, write_recipe


def demo_recipe(tmp: Path, **over) -> Path:
    raw = dict(
        project_name="safety",
        dataset_path=str(DEMO),
        export_path=str(tmp / "out.jsonl"),
        partition_size=50,
        process=STANDARD_OPS,
    )
    raw.update(over)
    return write_recipe(tmp / "r.yaml", **raw)


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_export_into_a_users_directory_is_refused_and_nothing_is_deleted(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("my precious notes")
    recipe = demo_recipe(tmp_path, export_path=str(results))
    for cmd in ("validate", "run"):
        proc = run_cli(cmd, str(recipe))
        assert proc.returncode == ExitCode.USAGE, proc.stderr
        assert "export_path" in proc.stderr and "holds other files" in proc.stderr
        no_traceback(proc)
    assert sorted(p.name for p in results.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "results"]  # no work dir


def test_restart_without_a_manifest_starts_over_never_reusing_stale_checkpoints(tmp_path):
    recipe = demo_recipe(tmp_path)
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    WorkDir(work).manifest_path.unlink()
    changed = [*STANDARD_OPS[:3], {"text_length_filter": {"min_len": 300}}]
    recipe = demo_recipe(tmp_path, process=changed)
    for extra in ((), ("--restart",)):
        proc = run_cli("run", str(recipe), "--work-dir", str(work), *extra)
        assert proc.returncode == ExitCode.OK, proc.stderr
        texts = [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")]
        assert texts == reference_texts(read_jsonl(DEMO), changed)
        WorkDir(work).manifest_path.write_text('{"job_id": "x", "finger')  # damaged, next round


def test_a_replaced_plan_never_reuses_checkpoints_of_the_old_one(tmp_path):
    recipe = demo_recipe(tmp_path)
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    expected = (tmp_path / "out.jsonl").read_bytes()
    # plan.json lost, and planned again differently (another CPU count in auto mode)
    other = build_plan(list_sources(str(DEMO)), PartitionConfig("size", 120, 256.0, None), 1)
    WorkDir(work).blobs.write_json(WorkDir.PLAN, other.to_dict())
    (tmp_path / "out.jsonl").unlink()
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == expected
    assert "200 partitions" not in proc.stderr and "0 already done" in proc.stderr


def test_a_plan_of_another_version_is_a_clear_refusal(tmp_path):
    recipe = demo_recipe(tmp_path)
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    plan = json.loads(WorkDir(work).plan_path.read_text())
    WorkDir(work).plan_path.write_text(json.dumps({**plan, "version": 99}))
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    assert "plan version 99" in proc.stderr and "--restart" in proc.stderr
    assert "resume with the same command" not in proc.stderr
    no_traceback(proc)


def test_files_added_to_a_directory_dataset_are_refused(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text(DEMO.read_text())
    recipe = demo_recipe(tmp_path, dataset_path=str(data))
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    (data / "b.jsonl").write_text(json.dumps({"text": "a sample added later on"}) + "\n")
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    assert "added" in proc.stderr and str(data / "b.jsonl") in proc.stderr
    no_traceback(proc)


def test_changed_content_with_the_same_size_and_mtime_exits_4_naming_the_file(tmp_path):
    rows = [{"text": f"sample {i} has enough characters"} for i in range(60)]
    rows[45]["text"] = "sample 45 will FAIL-ME when processed"
    data = tmp_path / "flaky.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    state = tmp_path / "state"
    state.mkdir()
    recipe = demo_recipe(
        tmp_path,
        dataset_path=str(data),
        partition_size=10,
        max_retries=0,
        max_failed_partitions=1,
        process=[{"flaky_mapper": {"state_dir": str(state)}}],
    )
    work = tmp_path / "work"
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.PARTIAL, proc.stderr
    st = os.stat(data)
    text = data.read_text()
    data.write_text(text.replace("sample 44 has", "sample 44 HAS"))  # same size
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    (state / "healed").touch()
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    assert f"input file {data} changed" in proc.stderr
    assert "resume with the same command" not in proc.stderr
    assert json.loads(WorkDir(work).status_path.read_text())["state"] == "failed"


def test_rejects_are_counted_with_a_global_op_and_on_reruns(tmp_path):
    data = tmp_path / "bad.jsonl"
    good = [json.dumps({"text": f"a good sample number {i}"}) for i in range(8)]
    data.write_text("\n".join([good[0], "{not json", *good[1:4], "[1, 2]", *good[4:]]) + "\n")
    recipe = demo_recipe(
        tmp_path,
        dataset_path=str(data),
        partition_size=4,
        process=[{"document_deduplicator": {}}],
    )
    work = tmp_path / "work"
    for _ in range(2):  # the first run, then a rerun that only exports
        proc = run_cli("run", str(recipe), "--work-dir", str(work))
        assert proc.returncode == ExitCode.OK, proc.stderr
        assert "2 malformed records" in proc.stderr
        assert json.loads(WorkDir(work).result_path.read_text())["rejected"] == 2
        assert json.loads(WorkDir(work).status_path.read_text())["samples"]["rejected"] == 2


def test_inspection_commands_on_a_non_work_dir_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (empty, tmp_path / "nonexistent"):
        for args in (
            ("status",),
            ("status", "--json"),
            ("report",),
            ("report", "--json"),
            ("events",),
            ("events", "--follow"),
        ):
            proc = run_cli(*args, str(path), timeout=30)
            assert proc.returncode == ExitCode.USAGE, (args, proc.stdout, proc.stderr)
            assert "not a dj-runner work dir" in proc.stderr
            no_traceback(proc)


def test_follow_honours_the_partition_filter_and_a_pipe_closed_early_is_quiet(tmp_path):
    recipe = demo_recipe(tmp_path)
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    proc = run_cli("events", str(work), "--follow", "--until-done", "-p", "2", "--json", timeout=60)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines and all(json.loads(line)["partition_id"] == 2 for line in lines)
    bad = run_cli("events", str(work), "--type", "no_such_type")
    assert bad.returncode == ExitCode.USAGE and "no_such_type" in bad.stderr
    piped = subprocess.run(
        f"{sys.executable} -m dj_runner.cli events {work} --json | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert len(piped.stdout.splitlines()) == 1
    assert "BrokenPipeError" not in piped.stderr and "Traceback" not in piped.stderr


def test_status_shows_the_current_run_not_the_previous_outcome(tmp_path):
    rows = [{"text": f"sample {i} has enough characters"} for i in range(30)]
    rows[25]["text"] = "sample 25 will FAIL-ME when processed"
    data = tmp_path / "flaky.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    state = tmp_path / "state"
    state.mkdir()
    recipe = demo_recipe(
        tmp_path,
        dataset_path=str(data),
        partition_size=10,
        max_retries=0,
        max_failed_partitions=1,
        process=[{"flaky_mapper": {"state_dir": str(state)}}, {"slow_mapper": {"seconds": 3}}],
    )
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.PARTIAL
    first = json.loads(run_cli("status", str(work), "--json").stdout)
    assert first["state"] == "partially_succeeded" and first["partitions"]["failed"] == 1
    (state / "healed").touch()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dj_runner.cli", "run", str(recipe), "--work-dir", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        seen = None
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            st = json.loads(run_cli("status", str(work), "--json").stdout)
            if st.get("run_id") != first["run_id"] and st["state"] == "running" and st["resumed"]:
                seen = st
                break
        assert seen is not None, "never saw the resumed run as running past its plan"
        assert seen["runner_alive"] is True and seen["resumed"]["partitions_done"] == 2
        assert seen["finished_at"] is None and seen["error"] is None
        assert proc.wait(timeout=120) == ExitCode.OK
    finally:
        if proc.poll() is None:
            proc.kill()
    last = json.loads(run_cli("status", str(work), "--json").stdout)
    assert last["state"] == "succeeded" and last["partitions"]["done"] == 3
    assert last["samples"] == {"in": 30, "out": 30, "rejected": 0}


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_bad_lock_and_grace_arguments_exit_2(tmp_path, value):
    recipe = demo_recipe(tmp_path)
    for flag in ("--wait-for-lock", "--grace-period"):
        proc = run_cli("run", str(recipe), flag, value)
        assert proc.returncode == ExitCode.USAGE and flag in proc.stderr


def _start_slow_run(tmp_path: Path, work: Path, *extra: str) -> subprocess.Popen[str]:
    recipe = demo_recipe(
        tmp_path,
        partition_size=100,
        process=[{"slow_mapper": {"seconds": 120}}],
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dj_runner.cli",
            "run",
            str(recipe),
            "--work-dir",
            str(work),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until its tasks run (the op_start events)
        if proc.poll() is not None:
            break
        # The event log is one segment file per writing process.
        segments = WorkDir(work).events_dir.glob("*.jsonl")
        if any('"op_start"' in segment.read_text() for segment in segments):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    return proc


def test_grace_period_running_out_and_a_second_signal_exit_at_once(tmp_path):
    import signal

    work = tmp_path / "work"
    proc = _start_slow_run(tmp_path, work, "--grace-period", "1")
    try:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 6 and time.monotonic() - start < 30, err
        st = json.loads(WorkDir(work).status_path.read_text())
        assert st["state"] == "interrupted" and "grace period" in st["error"]["message"]
        assert "Traceback" not in err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    work2 = tmp_path / "work2"
    proc = _start_slow_run(tmp_path, work2)  # default grace period: 20 s
    try:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not list(work2.glob(".stop-*")) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the first signal was handled (its stop marker exists)
        assert list(work2.glob(".stop-*")), "the first SIGTERM was not handled"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM and time.monotonic() - start < 15
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
