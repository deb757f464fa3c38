"""The dj-runner command line: run, validate, status, events, report, ops; progress output."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from dj_runner.contract import ExitCode
from dj_runner.observe.event_log import read_events

from conftest import DEMO, STANDARD_OPS, read_jsonl, run_cli, write_recipe


def test_run_then_status_events_report(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        project_name="cli",
        dataset_path=str(DEMO),
        export_path=str(tmp_path / "out.jsonl"),
        partition_size=50,
        process=STANDARD_OPS,
    )
    work = tmp_path / "work"
    proc = run_cli("run", str(recipe), "--work-dir", str(work), "--job-id", "cli-job")
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "job cli-job succeeded: 201 ->" in proc.stderr
    # not a terminal: plain progress lines
    assert "partition 0 done" in proc.stderr and "[5/5]" in proc.stderr

    st = json.loads(run_cli("status", str(work), "--json").stdout)
    assert st["job_id"] == "cli-job" and st["state"] == "succeeded"
    assert st["partitions"] == {"total": 5, "done": 5, "failed": 0, "running": 0}
    assert st["samples"]["in"] == 201 and st["samples"]["out"] < 201
    assert st["last_checkpoint_at"].endswith("Z") and st["resumable"] is False
    assert st["finished_at"] and st["error"] is None and st["runner_alive"] is False
    text = run_cli("status", str(work)).stdout
    assert "5 done, 0 failed, 0 running, 0 remaining" in text and "resumable: no" in text

    ev = run_cli("events", str(work), "--type", "partition_complete").stdout.splitlines()
    assert len(ev) == 5 and all("partition_complete" in line for line in ev)
    ev = run_cli("events", str(work), "--partition", "2", "--json").stdout.splitlines()
    assert ev and all(json.loads(line)["partition_id"] == 2 for line in ev)

    report = run_cli("report", str(work)).stdout
    assert "whitespace_normalization_mapper" in report and "rows/s" in report
    perf = json.loads(run_cli("report", str(work), "--json").stdout)
    assert [op["op_name"] for op in perf["ops"]] == [next(iter(o)) for o in STANDARD_OPS]
    assert perf["ops"][0]["rows_in"] == 201 and perf["rows_out"] < 201

    # a second run of a finished job recomputes nothing
    again = run_cli("run", str(recipe), "--work-dir", str(work))
    assert again.returncode == ExitCode.OK
    assert "5 already done" in again.stderr


def test_bad_recipe_fails_before_any_work(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(DEMO),
        export_path=str(tmp_path / "o.jsonl"),
        process=[{"text_length_filter": {"min_len": -1}}],
    )
    proc = run_cli("run", str(recipe), "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == ExitCode.USAGE
    assert "text_length_filter" in proc.stderr and "min_len" in proc.stderr
    assert not (tmp_path / "w").exists()
    missing = write_recipe(
        tmp_path / "m.yaml",
        dataset_path=str(tmp_path / "nope.jsonl"),
        export_path=str(tmp_path / "o.jsonl"),
        process=STANDARD_OPS,
    )
    proc = run_cli("run", str(missing))
    assert proc.returncode == ExitCode.USAGE and "nope.jsonl" in proc.stderr


def test_validate_and_ops():
    proc = run_cli("ops")
    assert "text_length_filter(" in proc.stdout and "min_len=10" in proc.stdout
    proc = run_cli("validate", str(DEMO.parent.parent / "recipe.yaml"))
    assert proc.returncode == 0 and proc.stdout.startswith("ok: 5 ops")


def test_executor_type_is_said_by_validate_and_in_the_event_log(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(DEMO),
        export_path=str(tmp_path / "o.jsonl"),
        executor_type="ray",
        process=STANDARD_OPS[:1],
    )
    proc = run_cli("validate", str(recipe))
    assert proc.returncode == 0 and proc.stdout.startswith("ok: 1 ops")
    assert "note: executor_type: 'ray' runs as 'ray_partitioned'" in proc.stderr
    proc = run_cli("run", str(recipe), "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "note: executor_type: 'ray' runs as 'ray_partitioned'" in proc.stderr
    (start,) = read_events(tmp_path / "w" / "events", event_type="job_start")
    assert start.get("executor_type") == "ray"
    assert start.get("notices")[0].startswith("executor_type: 'ray' runs as 'ray_partitioned'")


def test_data_juicer_placeholders_in_work_dir_and_export_path(tmp_path):
    """The form of Data-Juicer's partitioning/checkpointing/event-logging demo config:
    relative paths with {job_id} and {work_dir}, its separate storage places, the common op
    parameters."""
    ignored = ("partition_dir", "event_log_dir", "checkpoint_dir", "export_in_parallel")
    recipe = write_recipe(
        tmp_path / "r.yaml",
        project_name="my_project",
        dataset_path=str(DEMO),
        work_dir="./outputs/my_project/{job_id}",
        export_path="{work_dir}/processed.jsonl",
        executor_type="ray_partitioned",
        partition_dir="{work_dir}/partitions",
        event_log_dir="{work_dir}/event_logs",
        checkpoint_dir="{work_dir}/checkpoints",
        partition={"mode": "manual", "num_of_partitions": 4},
        checkpoint={"enabled": True, "strategy": "every_n_ops", "n_ops": 3},
        intermediate_storage={"format": "parquet", "write_partitions": False},
        event_logging={"enabled": True},
        process=[
            {"clean_links_mapper": {"text_key": "text", "batch_size": 64}},
            {"whitespace_normalization_mapper": {"text_key": "text"}},
            {"text_length_filter": {"text_key": "text", "min_len": 5, "max_len": 10000}},
        ],
        export_in_parallel=True,
        keep_stats_in_res_ds=True,
        keep_hashes_in_res_ds=True,
    )
    proc = run_cli("run", str(recipe), cwd=tmp_path)
    assert proc.returncode == ExitCode.OK, proc.stderr
    for key in (*ignored, "keep_hashes_in_res_ds", "intermediate_storage.write_partitions"):
        assert f"note: {key}: " in proc.stderr, key
    assert "clean_links_mapper.batch_size" in proc.stderr
    (work,) = (tmp_path / "outputs" / "my_project").iterdir()
    assert work.name.startswith("my_project-") and "{" not in work.name
    out = read_jsonl(work / "processed.jsonl")
    assert 0 < len(out) <= 201 and "text_len" in out[0]["__dj__stats__"]
    assert len(json.loads((work / "plan.json").read_text())["partitions"]) == 4
    assert not list(tmp_path.rglob("*{*"))  # no directory named after a placeholder
    again = run_cli("run", str(recipe), cwd=tmp_path)  # the same job id: it resumes
    assert again.returncode == ExitCode.OK, again.stderr
    assert len(read_events(work / "events", event_type="job_restart")) == 1
    assert [p.name for p in (tmp_path / "outputs" / "my_project").iterdir()] == [work.name]


def test_progress_bar_on_a_terminal(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(DEMO),
        export_path=str(tmp_path / "o.jsonl"),
        partition_size=100,
        process=STANDARD_OPS[:1],
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child runs the CLI with a terminal as stderr
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "dj_runner.cli",
                "run",
                str(recipe),
                "--work-dir",
                str(tmp_path / "w"),
            ],
        )
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = out.decode(errors="replace")
    assert "━" in text and "3/3" in text  # rich's bar and its M/N column
    assert "partition 0 done" not in text  # no plain lines on a terminal


def test_module_entry_point_matches_console_script():
    proc = subprocess.run(
        ["dj-runner", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": os.path.dirname(sys.executable)},
    )
    assert proc.returncode == 0 and "status" in proc.stdout


def _bad_recipes(tmp):
    """(name, recipe keys, what the error must say): each one run would refuse."""
    data = tmp / "data"
    data.mkdir()
    (data / "in.jsonl").write_text('{"text": "hello there", "id": 1}\n')
    inp = str(data / "in.jsonl")
    (tmp / "afile").write_text("x")
    ops = [{"whitespace_normalization_mapper": {}}]
    return [
        (
            "regex",
            {"process": [{"clean_email_mapper": {"pattern": "("}}]},
            "clean_email_mapper.pattern",
        ),
        ("inf", {"max_partition_size_mb": float("inf")}, "a finite number"),
        ("nan", {"retry_base_delay_s": float("nan")}, "a finite number"),
        ("missing", {"dataset_path": str(tmp / "nope.jsonl")}, "nope.jsonl"),
        ("glob", {"dataset_path": str(tmp / "none-*.jsonl")}, "a glob that matches files"),
        ("same", {"export_path": inp}, "other than dataset_path"),
        (
            "inside",
            {"dataset_path": str(data), "export_path": str(data / "o" / "r.jsonl")},
            "outside the dataset directory",
        ),
        ("cwd", {"export_path": str(tmp)}, "does not contain the dataset_path"),
        ("workdir-file", {"work_dir": str(tmp / "afile")}, "is a file"),
        ("text-keys", {"text_keys": "txt"}, "none of the first 1 records has 'txt'"),
    ], {"dataset_path": inp, "export_path": str(tmp / "out" / "r.jsonl"), "process": ops}


def test_validate_refuses_everything_run_refuses_before_any_work(tmp_path):
    """M10, m2, m3, M1, M15, C1, M9, M5: one pre-flight, shared; exit 2; nothing written."""
    cases, base = _bad_recipes(tmp_path)
    for name, keys, expected in cases:
        recipe = write_recipe(tmp_path / f"{name}.yaml", **{**base, **keys})
        for command in ("validate", "run"):
            proc = run_cli(command, str(recipe), cwd=tmp_path)
            assert proc.returncode == ExitCode.USAGE, (name, command, proc.stderr)
            assert expected in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
    assert not (tmp_path / "out").exists()


def test_non_utf8_recipe_and_corrupt_input_are_one_line_errors(tmp_path):
    """m1, M8: no traceback, the file named."""
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"# caf\xe9\nproject_name: x\n")
    proc = run_cli("validate", str(latin))
    assert proc.returncode == ExitCode.USAGE and "not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip\n")
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(tmp_path / "bad.jsonl.gz"),
        export_path=str(tmp_path / "o" / "r.jsonl"),
        process=STANDARD_OPS,
    )
    for command in ("validate", "run"):
        proc = run_cli(command, str(recipe))
        assert proc.returncode == ExitCode.USAGE, proc.stderr
        assert "bad.jsonl.gz" in proc.stderr and "Traceback" not in proc.stderr
