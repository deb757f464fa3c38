"""Resource usage of a real job (local engine): per op, per partition and for the job, in the
event log, the performance summary, the report and ``/metrics``' families."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path

from dj_runner.contract import ExitCode
from dj_runner.engine.executor import Executor
from dj_runner.observe.metrics import RunnerCollector, RunnerFigures
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.atomic import read_records
from dj_runner.store.checkpoint import COMMITS
from dj_runner.store.workdir import WorkDir


def run_job(tmp: Path) -> Executor:
    data = tmp / "in.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": f"  sample {i} " + "word " * (i % 50)}) + "\n" for i in range(600)
        )
    )
    recipe = parse_recipe(
        {
            "dataset_path": str(data),
            "export_path": str(tmp / "out.jsonl"),
            "engine": "local",
            "np": 2,
            "partition_size": 200,
            "process": [
                {"whitespace_normalization_mapper": None},
                {"text_length_filter": {"min_len": 20}},
                {"document_deduplicator": None},
            ],
        }
    )
    ex = Executor(recipe, work_dir=tmp / "work")
    assert ex.run().exit_code == ExitCode.OK
    return ex


def test_resources_in_events_summary_report_and_metrics(tmp_path):
    ex = run_job(tmp_path)
    events = ex.get_events()
    work = WorkDir(tmp_path / "work")
    plan = {p["pid"]: p for p in json.loads(work.plan_path.read_text())["partitions"]}

    ops = [e for e in events if e.event_type == "op_complete"]
    assert len(ops) == 9
    for e in ops:
        assert e.get("cpu_time_s") >= 0 and e.get("peak_rss_bytes") > 10 * 2**20
        assert e.get("input_bytes") > 0 and e.get("output_bytes") > 0

    saves = [e for e in events if e.event_type == "checkpoint_save"]
    committed = {}
    for pid in plan:
        for r in read_records(work.checkpoint_dir(pid) / COMMITS):
            committed[(pid, r["file"])] = r["bytes"]
    for e in saves:
        name = Path(e.checkpoint_path).name
        assert e.get("checkpoint_bytes") == committed[(e.partition_id, name)]

    saved_by_part: dict[int, int] = defaultdict(int)
    for e in saves:
        saved_by_part[e.partition_id] += e.get("checkpoint_bytes")
    op_cpu: dict[int, float] = defaultdict(float)
    for e in ops:
        op_cpu[e.partition_id] += e.get("cpu_time_s")
    done = {e.partition_id: e for e in events if e.event_type == "partition_complete"}
    assert sorted(done) == sorted(plan)
    for pid, e in done.items():
        # Read once from the source, then (after the global dedup) from its checkpoint.
        loads = [
            o.get("checkpoint_bytes")
            for o in events
            if o.event_type == "checkpoint_load" and o.partition_id == pid
        ]
        assert len(loads) == 1 and loads[0] > 0
        assert e.get("bytes_read") == plan[pid]["bytes"] + loads[0]
        assert e.get("checkpoint_bytes") == saved_by_part[pid]  # over both stages (dedup)
        assert e.get("bytes_written") == e.get("checkpoint_bytes")  # no rejects
        assert e.get("cpu_time_s") >= op_cpu[pid] - 1e-6  # the ops ran within the task
        peaks = [o.get("peak_rss_bytes") for o in ops if o.partition_id == pid]
        assert e.get("peak_rss_bytes") >= max(peaks)

    (job,) = [e for e in events if e.event_type == "job_complete"]
    assert job.get("bytes_read") == sum(e.get("bytes_read") for e in done.values())
    assert job.get("bytes_read") > sum(p["bytes"] for p in plan.values())
    assert job.get("checkpoint_bytes") == sum(saved_by_part.values())
    assert 0 < job.get("work_dir_bytes") <= work.size()

    perf = ex.get_performance_summary()
    by_op = {o["op_name"]: o for o in perf["ops"]}
    assert sum(o["checkpoint_bytes"] for o in perf["ops"]) == job.get("checkpoint_bytes")
    assert by_op["text_length_filter"]["cpu_time_s"] > 0
    assert [p["partition_id"] for p in perf["partitions"]] == sorted(plan)
    assert perf["resources"]["work_dir_bytes"] == job.get("work_dir_bytes")
    report = ex.generate_status_report()
    assert "resources:" in report and "CPU s" in report and "peak RSS" in report

    figures = RunnerFigures()
    for e in events:
        figures.apply(e)
    families = {f.name: f for f in RunnerCollector(figures, threading.Lock(), "ns", "j").collect()}
    op_cpu_metric = {
        s.labels["op"]: s.value for s in families["datajuicer_runner_op_cpu_seconds"].samples
    }
    assert (
        abs(op_cpu_metric["text_length_filter"] - by_op["text_length_filter"]["cpu_time_s"]) < 1e-6
    )
    (wd,) = families["datajuicer_runner_work_dir_bytes"].samples
    assert wd.value == job.get("work_dir_bytes")
    (peak,) = families["datajuicer_runner_worker_peak_rss_bytes"].samples
    assert peak.value == job.get("peak_rss_bytes")
    (written,) = families["datajuicer_runner_written_bytes"].samples
    assert written.value == job.get("bytes_written")
