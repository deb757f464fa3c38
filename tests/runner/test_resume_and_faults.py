"""Crash, corrupt, change and fail: the runner resumes to exactly the clean result."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dj_runner.contract import ExitCode
from dj_runner.engine.executor import Executor
from dj_runner.observe.event_log import read_events
from dj_runner.observe.status_file import read_status
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.atomic import read_records
from dj_runner.store.checkpoint import COMMITS
from dj_runner.store.workdir import WorkDir
from tests.harness.waiting import wait_for

from conftest import DEMO, STANDARD_OPS, read_jsonl, reference_texts, run_cli, write_recipe


def commit_count(work: Path) -> int:
    return sum(len(read_records(p)) for p in WorkDir(work).checkpoints_dir.glob("p*/commits.jsonl"))


def kill_recipe(tmp: Path, data: Path) -> Path:
    ops = [{"slow_mapper": {"seconds": 0.02}}, *STANDARD_OPS]
    return write_recipe(
        tmp / "recipe.yaml",
        project_name="kill",
        dataset_path=str(data),
        export_path=str(tmp / "out.jsonl"),
        partition_size=60,
        max_retries=0,
        np=2,
        process=ops,
    )


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory, corpora) -> Path:
    """About 1,700 real samples: Python docs sections plus the demo corpus."""
    path = tmp_path_factory.mktemp("killdata") / "data.jsonl"
    lines = (corpora / "python-docs-excerpt.jsonl").read_text().splitlines()[:1500]
    lines += DEMO.read_text().splitlines()
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def clean_output(tmp_path_factory, kill_data) -> bytes:
    tmp = tmp_path_factory.mktemp("clean")
    recipe = kill_recipe(tmp, kill_data)
    proc = run_cli("run", str(recipe), "--work-dir", str(tmp / "work"))
    assert proc.returncode == ExitCode.OK, proc.stderr
    return (tmp / "out.jsonl").read_bytes()


def test_sigkill_at_random_moments_then_resume_is_identical(tmp_path, kill_data, clean_output):
    recipe = kill_recipe(tmp_path, kill_data)
    work = tmp_path / "work"
    rng = random.Random(20261128)
    kills = 0
    for attempt in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "dj_runner.cli", "run", str(recipe), "--work-dir", str(work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        before = commit_count(work) if work.exists() else 0
        # Kill once a random number of new commits has landed, or at a random instant
        # while the job is working; whichever the draw picks.
        if attempt % 2 == 0:
            target = before + rng.randint(1, 12)
            wait_for(
                lambda t=target, p=proc: commit_count(work) >= t or p.poll() is not None,
                120,
                "checkpoint commits",
            )
        else:
            wait_for(
                lambda b=before, p=proc: commit_count(work) > b or p.poll() is not None,
                120,
                "the first commit of this run",
            )
            deadline = time.monotonic() + rng.uniform(0.0, 1.5)
            wait_for(
                lambda d=deadline, p=proc: time.monotonic() >= d or p.poll() is not None,
                5,
                "the kill instant",
                interval=0.01,
            )
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        if proc.returncode == 0:
            break
    assert kills >= 3
    final = run_cli("run", str(recipe), "--work-dir", str(work))
    assert final.returncode == ExitCode.OK, final.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output
    # Later runs resumed from checkpoints rather than starting over.
    assert read_events(WorkDir(work).events_dir, event_type="job_restart")
    assert read_events(WorkDir(work).events_dir, event_type="checkpoint_load")


def test_corrupted_checkpoints_are_detected_and_recomputed(tmp_path, kill_data, clean_output):
    recipe = kill_recipe(tmp_path, kill_data)
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    finals = sorted(work.glob("checkpoints/p*/op006.parquet"))
    assert len(finals) >= 3
    # truncate one, flip a byte in another, delete a third
    finals[0].write_bytes(finals[0].read_bytes()[:100])
    data = bytearray(finals[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    finals[1].write_bytes(bytes(data))
    finals[2].unlink()
    (tmp_path / "out.jsonl").unlink()
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output
    invalid = read_events(WorkDir(work).events_dir, event_type="checkpoint_invalid")
    assert {e.partition_id for e in invalid} >= {0, 1, 2}


def test_torn_checkpoint_without_commit_is_ignored(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(DEMO),
        export_path=str(tmp_path / "out.jsonl"),
        partition_size=100,
        process=STANDARD_OPS,
    )
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    expected = (tmp_path / "out.jsonl").read_bytes()
    # A crash mid-write leaves a temporary file and a half-written, uncommitted file.
    pdir = WorkDir(work).checkpoint_dir(0)
    (pdir / ".op005.parquet.tmp-999").write_bytes(b"PAR1 torn")
    commits = pdir / COMMITS
    commits.write_bytes(commits.read_bytes() + b'{"step": 9, "hashed": false, "fi')
    (tmp_path / "out.jsonl").unlink()
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    assert (tmp_path / "out.jsonl").read_bytes() == expected


def test_changed_recipe_is_refused_and_restart_starts_over(tmp_path):
    base = dict(
        dataset_path=str(DEMO),
        export_path=str(tmp_path / "out.jsonl"),
        partition_size=100,
        process=STANDARD_OPS,
    )
    recipe = write_recipe(tmp_path / "r.yaml", **base)
    work = tmp_path / "work"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == ExitCode.OK
    changed = dict(base, process=[*STANDARD_OPS[:3], {"text_length_filter": {"min_len": 50}}])
    write_recipe(recipe, **changed)
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.REFUSED
    assert "recipe changed" in proc.stderr and "--restart" in proc.stderr
    assert "min_len" in proc.stderr
    proc = run_cli("run", str(recipe), "--work-dir", str(work), "--restart")
    assert proc.returncode == ExitCode.OK, proc.stderr
    texts = [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert texts == reference_texts(read_jsonl(DEMO), changed["process"])


def test_changed_input_is_refused(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(DEMO.read_text())
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(data),
        export_path=str(tmp_path / "o.jsonl"),
        process=STANDARD_OPS[:1],
    )
    assert run_cli("run", str(recipe), "--work-dir", str(tmp_path / "w")).returncode == 0
    data.write_text(DEMO.read_text() + json.dumps({"text": "one more sample"}) + "\n")
    proc = run_cli("run", str(recipe), "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == ExitCode.REFUSED
    assert "changed" in proc.stderr and str(data) in proc.stderr


def test_a_finished_job_rerun_over_changed_content_is_refused(tmp_path):
    """Same size, same modification time, other content: the rerun hashes the input."""
    data = tmp_path / "d.jsonl"
    data.write_text(DEMO.read_text())
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(data),
        export_path=str(tmp_path / "o.jsonl"),
        partition_size=50,
        process=STANDARD_OPS[:1],
    )
    work = tmp_path / "w"
    assert run_cli("run", str(recipe), "--work-dir", str(work)).returncode == 0
    first = (tmp_path / "o.jsonl").read_bytes()
    again = run_cli("run", str(recipe), "--work-dir", str(work))
    assert again.returncode == ExitCode.OK and (tmp_path / "o.jsonl").read_bytes() == first
    starts = read_events(work / "events", event_type="processing_start")
    assert starts[-1].get("metadata") == {"input_verified_partitions": 5}
    st = data.stat()
    text = data.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    changed = last.replace("a", "b", 1)
    assert changed != last and len(changed) == len(last)
    data.write_text(text[: len(text) - len(last) - 1] + changed + "\n")
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.stat().st_size == st.st_size
    proc = run_cli("run", str(recipe), "--work-dir", str(work))
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    assert f"input file {data} changed" in proc.stderr and "partition 4" in proc.stderr
    assert (tmp_path / "o.jsonl").read_bytes() == first  # the output on record is left alone


# ----------------------------------------------------------------------- in-process faults


def flaky_records(tmp: Path) -> Path:
    rows = [{"text": f"sample {i} has enough characters"} for i in range(60)]
    rows[45]["text"] = "sample 45 will FAIL-ME when processed"
    path = tmp / "flaky.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def flaky_recipe(tmp: Path, fail_times: int = 1_000_000, **extra):
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    raw = {
        "dataset_path": str(flaky_records(tmp)),
        "export_path": str(tmp / "out.jsonl"),
        "partition_size": 10,
        "retry_base_delay_s": 0.05,
        "process": [
            {"flaky_mapper": {"state_dir": str(state), "fail_times": fail_times}},
            {"text_length_filter": {"min_len": 5}},
        ],
    }
    raw.update(extra)
    return parse_recipe(raw), state


@pytest.mark.usefixtures("ray_session")
def test_retries_with_exponential_backoff_then_succeeds(tmp_path):
    recipe, _ = flaky_recipe(tmp_path, fail_times=2, max_retries=3)
    result = Executor(recipe, work_dir=tmp_path / "work").run()
    assert result.exit_code == ExitCode.OK, result.error
    retries = read_events(WorkDir(tmp_path / "work").events_dir, event_type="partition_retry")
    assert [e.partition_id for e in retries] == [4, 4]
    assert [e.get("retry_count") for e in retries] == [1, 2]
    assert [e.get("retry_delay_s") for e in retries] == [0.05, 0.1]  # doubling
    # status.json counts them and names the newest (the operator posts them as Events).
    counted = read_status(tmp_path / "work")
    assert counted is not None and counted["retries"]["count"] == 2
    assert counted["retries"]["partition"] == 4
    starts = read_events(
        WorkDir(tmp_path / "work").events_dir,
        event_type=("partition_start", "partition_resume"),
        partition_id=4,
    )
    assert len(starts) == 3
    for retry, nxt in zip(retries, starts[1:], strict=True):
        assert nxt.timestamp - retry.timestamp >= retry.get("retry_delay_s")
    assert result.rows_out == 60


@pytest.mark.usefixtures("ray_session")
def test_exhausted_partition_fails_job_unless_allowed_and_resume_retries(tmp_path):
    recipe, state = flaky_recipe(tmp_path, max_retries=1)
    result = Executor(recipe, work_dir=tmp_path / "work").run()
    assert result.exit_code == ExitCode.FAILED
    assert "max_failed_partitions" in result.error
    failed = read_events(WorkDir(tmp_path / "work").events_dir, event_type="job_failed")
    assert len(failed) == 1
    op_failed = read_events(WorkDir(tmp_path / "work").events_dir, event_type="op_failed")
    msg = op_failed[0].message
    assert "flaky_mapper" in msg and "partition 4" in msg and "sample 5" in msg
    assert "FAIL-ME" in msg

    recipe2, _ = flaky_recipe(tmp_path, max_retries=1, max_failed_partitions=1)
    result = Executor(recipe2, work_dir=tmp_path / "work2").run()
    assert result.exit_code == ExitCode.PARTIAL
    assert result.failed_partitions == [4]
    assert result.rows_out == 50  # every other partition was exported

    (state / "healed").touch()
    result = Executor(recipe2, work_dir=tmp_path / "work2").run()
    assert result.exit_code == ExitCode.OK
    assert result.rows_out == 60
    texts = [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert texts[45] == "sample 45 will FAIL-ME when processed"


@pytest.mark.usefixtures("ray_session")
def test_malformed_records_are_rejected_or_fatal(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"text": "a good sample with text"})
        + "\n"
        + "{not json\n"
        + json.dumps([1, 2])
        + "\n"
        + json.dumps({"text": 42})
        + "\n"
        + json.dumps({"text": "another good sample"})
        + "\n"
    )
    raw = {
        "dataset_path": str(data),
        "export_path": str(tmp_path / "o.jsonl"),
        "process": [{"text_length_filter": {"min_len": 1}}],
    }
    result = Executor(parse_recipe(raw), work_dir=tmp_path / "w").run()
    assert result.exit_code == ExitCode.OK and result.rejected == 3 and result.rows_out == 2
    rejects = [
        r
        for f in sorted(WorkDir(tmp_path / "w").rejects_dir.glob("p*.jsonl"))
        for r in read_jsonl(f)
    ]
    assert [(r["source"], r["line"]) for r in rejects] == [
        (str(data), 2),
        (str(data), 3),
        (str(data), 4),
    ]
    assert "not a string" in rejects[2]["error"]

    raw["malformed_records"] = "fail"
    result = Executor(parse_recipe(raw), work_dir=tmp_path / "w2").run()
    assert result.exit_code == ExitCode.FAILED
    # partitions run in parallel: whichever malformed record is met first stops the job
    assert re.search(rf"{re.escape(str(data))} line [234]: ", result.error)


def test_monitor_events_follows_a_running_job_from_another_process(tmp_path, kill_data):
    from dj_runner.observe.event_log import follow_events

    recipe = kill_recipe(tmp_path, kill_data)
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dj_runner.cli", "run", str(recipe), "--work-dir", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    followed = threading.Event()

    def deadline() -> None:
        # The follower's deadline: 30 s after the runner exited (or 300 s after the start),
        # so a runner that dies without its final event fails the test instead of hanging it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=300)
        followed.wait(30)
        stop.set()

    watcher = threading.Thread(target=deadline, daemon=True)
    try:
        watcher.start()
        seen = []
        for ev in follow_events(
            WorkDir(work).events_dir, until=("job_complete", "job_failed"), stop=stop
        ):
            seen.append(ev)
        followed.set()
        assert proc.wait(timeout=120) == ExitCode.OK
    finally:
        if proc.poll() is None:
            proc.kill()
    types = [e.event_type for e in seen]
    plan = json.loads(WorkDir(work).plan_path.read_text())
    assert types[0] == "job_start" and types[-1] == "job_complete"
    assert types.count("partition_complete") == len(plan["partitions"]) > 20
    assert {"op_start", "op_complete", "checkpoint_save", "partition_start"} <= set(types)


# ----------------------------------------------------------------------- one writer, SIGTERM


def test_two_runners_started_together_one_is_refused_the_other_is_clean(
    tmp_path, kill_data, clean_output
):
    recipe = kill_recipe(tmp_path, kill_data)
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "dj_runner.cli", "run", str(recipe), "--work-dir", str(work)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = sorted(p.returncode for p in procs)
    assert codes == [ExitCode.OK, ExitCode.LOCKED], outs
    refused = outs[[p.returncode for p in procs].index(ExitCode.LOCKED)][1]
    assert "is in use by run" in refused and "pid" in refused and "Traceback" not in refused
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output
    assert not read_events(WorkDir(work).events_dir, event_type="checkpoint_invalid")
    assert not read_events(WorkDir(work).events_dir, event_type="partition_retry")


def test_sigterm_at_random_moments_then_resume_is_identical(tmp_path, kill_data, clean_output):
    recipe = kill_recipe(tmp_path, kill_data)
    work = tmp_path / "work"
    rng = random.Random(20261130)
    stops = 0
    for attempt in range(6):
        err = tmp_path / f"stderr-{attempt}.txt"
        with open(err, "w") as fh:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dj_runner.cli",
                    "run",
                    str(recipe),
                    "--work-dir",
                    str(work),
                ],
                stdout=subprocess.DEVNULL,
                stderr=fh,
                start_new_session=True,
            )
        before = commit_count(work) if work.exists() else 0
        target = before + rng.randint(1, 10)
        wait_for(
            lambda t=target, p=proc: commit_count(work) >= t or p.poll() is not None,
            120,
            "checkpoint commits",
        )
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the driver only, as Kubernetes does
            code = proc.wait(timeout=60)
            stops += code == ExitCode.INTERRUPTED
            assert code in (ExitCode.OK, ExitCode.INTERRUPTED), err.read_text()
            text = err.read_text()
            assert "Traceback" not in text and "SIGTERM received" not in text, text
            if code == ExitCode.INTERRUPTED:
                st = json.loads(WorkDir(work).status_path.read_text())
                assert st["state"] == "interrupted" and st["finished_at"]
                assert "interrupted" in text and "resume with the same command" in text
        else:
            code = proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of this run may linger
        if code == ExitCode.OK:
            break
    assert stops >= 2
    assert read_events(WorkDir(work).events_dir, event_type="job_interrupted")
    final = run_cli("run", str(recipe), "--work-dir", str(work))
    assert final.returncode == ExitCode.OK, final.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output
    assert not read_events(WorkDir(work).events_dir, event_type="checkpoint_invalid")
