"""Scale on paper and in simulation: what grows, and how, on the way to 1e9 samples / 1 TB.

No real data and no Ray. Three measurements, each at several scales, so that a figure is
extrapolated to 1e9 samples only where its growth is measured to be linear:

- planning: ``synthetic_plan`` drives the planner's own cutter (``plan/partitioner.py``) with
  synthetic lines, exactly as ``build_plan`` does for a JSONL source (every byte hashed), without
  the disk: wall time, the growth of peak RSS (one fresh process per scale) and the size of
  ``plan.json`` as the runner writes it;
- the driver: the real ``PartitionScheduler`` and the executor's real stage listener (events,
  ``status.json``, rejects look-ups, in a local work dir) over P partitions, with a backend whose
  tasks return at once, at ``capacity = 2 x workers``, both stages of the bench recipe (up to the
  global dedup, then to the end): the driver's CPU per partition and per event it writes, and
  ``status.json``'s size;
- per partition, from one real run of the bench recipe (the local engine, a few partitions):
  the events the tasks write and their bytes, the checkpoint commits, and what that makes in a
  bucket (one object per checkpoint file and one per commit record); and the Prometheus series
  the runner's ``/metrics`` renders from those events, against the same events replayed many
  times over (the labels are bounded: the count must not move).

    python bench/scale_sim.py          # the driver at 1e6, 1e7, 1e8 samples; planning 1e5-1e7
    python bench/scale_sim.py --quick  # ten times smaller
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from recovery_bench import machine  # noqa: E402

#: The issue's scale: 1e9 samples in 1 TB (1,000 bytes a sample) on 512 workers.
TARGET_SAMPLES = 10**9
MEAN_BYTES = 1000
WORKERS = 512
PARTITION_SIZE = 10000  # the recipe's default partition_size
MAX_PARTITION_MB = 256.0


# -- the synthetic plan ------------------------------------------------------------------------


def line_lengths(n: int, mean: int, seed: int = 0) -> Iterator[int]:
    """``n`` line lengths in bytes, deterministic, uniform on [mean/2, 3*mean/2] (mean ``mean``).

    A linear congruential generator: cheap enough for 1e7 lines, identical on every run.
    """
    if n < 0 or mean < 2:
        raise ValueError(f"line_lengths: n={n!r} must be >= 0 and mean={mean!r} >= 2")
    span = mean + 1
    state = seed & 0xFFFFFFFF
    low = mean - mean // 2
    for _ in range(n):
        state = (1664525 * state + 1013904223) & 0xFFFFFFFF
        yield low + state % span


def synthetic_sources(files: int, sizes: list[int]) -> tuple[Any, ...]:
    from dj_runner.io.sources import SourceFile

    return tuple(
        SourceFile(f"synthetic/part-{k:05d}.jsonl", "jsonl", "none", sizes[k], 0)
        for k in range(files)
    )


def synthetic_plan(
    samples: int,
    mean_bytes: int = MEAN_BYTES,
    files: int = 1,
    rows_bound: int = PARTITION_SIZE,
    mb_bound: float = MAX_PARTITION_MB,
    seed: int = 0,
) -> Any:
    """The plan ``build_plan`` makes of ``files`` JSONL files holding ``samples`` lines.

    Samples go to the files in order, as evenly as they divide. Each line is hashed (the
    bytes of a reused buffer, as many as the line has: the cost of hashing is the planner's;
    the content is not), and cut by the planner's own ``_Cutter`` at the same bounds.
    """
    from dj_runner.plan.partitioner import PartitionPlan, Plan, _Cutter, combine_digests

    if samples < 1 or files < 1 or files > samples:
        raise ValueError(
            f"synthetic_plan: samples={samples!r} and files={files!r} must satisfy "
            "1 <= files <= samples"
        )
    buf = memoryview(bytes(3 * mean_bytes))
    cutter = _Cutter(rows_bound, mb_bound)
    sizes: list[int] = []
    lengths = line_lengths(samples, mean_bytes, seed)
    for idx in range(files):
        count = samples * (idx + 1) // files - samples * idx // files
        offset = 0
        for line_no, n in enumerate(_take(lengths, count), start=1):
            if cutter.full_for(n):
                cutter.close()
            cutter.add(idx, offset, offset + n, line_no, 1, n)
            cutter.hash_update(buf[:n])
            offset += n
        sizes.append(offset)
    cutter.close()
    parts = tuple(
        PartitionPlan(
            p.pid, p.ranges, p.rows, p.bytes, combine_digests([r.digest for r in p.ranges])
        )
        for p in cutter.partitions
    )
    return Plan(synthetic_sources(files, sizes), parts, rows_bound, mb_bound, "size")


def _take(it: Iterator[int], n: int) -> Iterator[int]:
    for _ in range(n):
        yield next(it)


def plan_json_bytes(plan: Any) -> int:
    """``plan.json``'s size as the runner writes it (``Blobs.write_json``)."""
    return len(json.dumps(plan.to_dict(), indent=1, sort_keys=True, default=str).encode())


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure_planning(samples: int, files: int) -> dict[str, Any]:
    """In this process: plan ``samples`` synthetic samples; time, peak RSS growth, plan.json."""
    import dj_runner.plan.partitioner  # noqa: F401  (imported before the baseline)

    Path("/proc/self/clear_refs").write_text("5")
    rss0 = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    plan = synthetic_plan(samples, files=files)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = (_status_kb("VmHWM") - rss0) / 1024
    return {
        "samples": samples,
        "bytes": sum(s.size for s in plan.sources),
        "partitions": len(plan.partitions),
        "plan_s": round(wall, 2),
        "plan_cpu_s": round(cpu, 2),
        "plan_peak_rss_mb": round(peak_mb, 1),
        "plan_json_bytes": plan_json_bytes(plan),
    }


# -- the driver, with tasks that return at once -------------------------------------------------


@dataclass(frozen=True)
class SimPart:
    pid: int
    rows: int


class InstantBackend:
    """A ``TaskBackend`` whose tasks end as soon as they are submitted, each with its result.

    ``wait`` answers one ready handle, as the Ray backend's ``ray.wait(num_returns=1)`` does.
    """

    def __init__(self, make_result: Any) -> None:
        self.make_result = make_result
        self._ready: dict[Hashable, tuple[Any, int]] = {}
        self._next = 0

    def submit(self, part: Any, attempt: int) -> Hashable:
        self._next += 1
        self._ready[self._next] = (part, attempt)
        return self._next

    def wait(self, handles: list[Hashable], timeout: float | None) -> list[Hashable]:
        return handles[:1]

    def result(self, handle: Hashable) -> Any:
        part, _ = self._ready.pop(handle)
        return self.make_result(part)

    def cancel(self, handle: Hashable) -> None:
        self._ready.pop(handle, None)


def simulate_driver(
    partitions: int, workers: int, work_dir: Path, write_status: bool = True
) -> dict[str, Any]:
    """The driver's two stages over ``partitions`` instant tasks; CPU, events, status.json.

    ``write_status=False`` counts the status writes without making them: what the rest of
    the driver costs.
    """
    import yaml

    from dj_runner.engine.executor import Executor, _StageListener
    from dj_runner.engine.partition_task import PartitionResult
    from dj_runner.engine.scheduler import PartitionScheduler, RetryPolicy
    from dj_runner.engine.task_body import event_logger
    from dj_runner.observe.status_file import StatusWriter
    from dj_runner.recipe.parse import parse_recipe
    from dj_runner.store.checkpoint import CheckpointKey

    raw = yaml.safe_load((BENCH_DIR / "recipes" / "bench.yaml").read_text())
    raw.update(dataset_path="synthetic.jsonl", export_path=str(work_dir / "out.jsonl"))
    recipe = parse_recipe(raw, base_dir=work_dir, work_dir=str(work_dir / "work"))
    ex = Executor(recipe, work_dir=work_dir / "work")
    writes: Counter[str] = Counter()

    class CountingStatus(StatusWriter):
        def write(self) -> None:
            writes["status"] += 1
            if write_status:
                super().write()

    ex.status = CountingStatus(ex.work.uri, "sim", ex.run_id, recipe.export_path)
    ex.events = event_logger(ex.work, "sim", recipe.event_logging)
    parts = [SimPart(pid, PARTITION_SIZE) for pid in range(partitions)]
    ex._parts = {p.pid: p for p in parts}
    ex.status.update(partitions={"total": partitions, "done": 0})
    n_ops = len(recipe.process)
    barrier = next(i for i, s in enumerate(recipe.process) if s.op.is_global)
    capacity = 2 * workers
    cpu = wall = 0.0
    writes.clear()
    for target in (CheckpointKey(barrier, hashed=True), CheckpointKey(n_ops)):

        def result(part: SimPart, target: CheckpointKey = target) -> PartitionResult:
            return PartitionResult(part.pid, target, part.rows, part.rows, 0, None)

        scheduler = PartitionScheduler(
            InstantBackend(result),
            RetryPolicy(0, 0.0),
            capacity=capacity,
            listener=_StageListener(ex, target, target.step == n_ops, partitions, capacity),
            reached=lambda res, t=target: res.final_key == t,
        )
        c0, t0 = time.process_time(), time.perf_counter()
        outcome = scheduler.run(parts)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - t0
        if len(outcome.done) != partitions:
            raise RuntimeError(f"simulated stage ended with {len(outcome.done)}/{partitions}")
    ex.events.close()
    events = sum(
        p.read_bytes().count(b"\n") for p in (work_dir / "work" / "events").glob("*") if p.is_file()
    )
    return {
        "partitions": partitions,
        "capacity": capacity,
        "driver_cpu_s": round(cpu, 3),
        "driver_cpu_ms_per_partition": round(1000 * cpu / partitions, 3),
        "driver_wall_s": round(wall, 3),
        "driver_events": events,
        "status_writes_per_partition": round(writes["status"] / partitions, 2),
        "driver_cpu_us_per_event": round(1e6 * cpu / max(events, 1), 1),
        "write_status": write_status,
        "status_json_bytes": (work_dir / "work" / "status.json").stat().st_size
        if write_status
        else None,
    }


# -- per partition, from a real run --------------------------------------------------------------


def real_run_profile(root: Path, samples: int, partition_size: int) -> dict[str, Any]:
    """Run the bench recipe for real (local engine); events, commits and series per partition."""
    import generate
    import yaml
    from run_bench import DEFAULT_DATA_DIR

    data = root / "data.jsonl"
    generate.generate(DEFAULT_DATA_DIR, samples, data, seed=0)
    raw = yaml.safe_load((BENCH_DIR / "recipes" / "bench.yaml").read_text())
    raw.update(
        dataset_path=str(data),
        export_path=str(root / "out.jsonl"),
        partition_size=partition_size,
        storage_format="parquet",
        checkpoint={"enabled": True, "strategy": "every_op"},
        event_logging={"enabled": True},
    )
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
    work = root / "work"
    cmd = [sys.executable, "-m", "dj_runner.cli", "run", str(recipe), "--work-dir", str(work)]
    subprocess.run(cmd, check=True, capture_output=True)
    from dj_runner.observe.event_log import read_events

    events = read_events(work / "events")
    parts = len(list((work / "checkpoints").glob("p*")))
    lines = [
        line
        for p in (work / "events").glob("*")
        if p.is_file()
        for line in p.read_bytes().splitlines()
    ]
    by_type = Counter(e.event_type for e in events)
    per_part = Counter(e.event_type for e in events if e.partition_id is not None)
    commits = sum(
        p.read_bytes().count(b"\n") for p in (work / "checkpoints").glob("p*/commits.jsonl")
    )
    files_left = sum(1 for p in (work / "checkpoints").glob("p*/*") if p.name != "commits.jsonl")
    return {
        "samples": samples,
        "partitions": parts,
        "events": len(events),
        "event_bytes": sum(len(line) + 1 for line in lines),
        "events_per_partition": round(sum(per_part.values()) / parts, 2),
        "event_bytes_mean": round(sum(len(line) + 1 for line in lines) / len(lines), 1),
        "events_by_type": dict(by_type),
        "commits_per_partition": commits / parts,
        "checkpoint_files_left_per_partition": files_left / parts,
        "series": metric_series(events),
        "series_events_x50": metric_series(events * 50),
    }


def metric_series(events: list[Any]) -> int:
    """The samples (series) the runner's ``/metrics`` renders after ``events``."""
    import threading

    from prometheus_client import CollectorRegistry, generate_latest

    from dj_runner.observe.metrics import RunnerCollector, RunnerFigures

    figures = RunnerFigures()
    for ev in events:
        figures.apply(ev)
    registry = CollectorRegistry()
    registry.register(RunnerCollector(figures, threading.Lock(), "ns", "job"))
    text = generate_latest(registry).decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


# -- main ---------------------------------------------------------------------------------------


def measure(quick: bool, workers: int, echo: bool = True) -> dict[str, Any]:
    """Planning at three scales (each in a fresh process), the driver at three scales with and
    without its status writes, and the per-partition figures of a real run."""
    scales = [10**5, 10**6, 10**7] if quick else [10**6, 10**7, 10**8]
    plan_scales = [n // 10 for n in scales]  # 1e4 to 1e6 (quick), 1e5 to 1e7
    load_start = os.getloadavg()
    planning = []
    for n in plan_scales:
        files = max(1, n // 10**6)  # 1 GB files, as a 1 TB input would come
        cmd = [sys.executable, __file__, "--child-plan", str(n), str(files)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        planning.append(json.loads(out.stdout))
        if echo:
            print(json.dumps(planning[-1]), flush=True)
    driver = []
    for n in scales:
        for write_status in (True, False):
            with tempfile.TemporaryDirectory(prefix="dj-scale-") as tmp:
                run = simulate_driver(n // PARTITION_SIZE, workers, Path(tmp), write_status)
            driver.append(run)
            if echo:
                print(json.dumps(run), flush=True)
    with tempfile.TemporaryDirectory(prefix="dj-scale-") as tmp:
        real = real_run_profile(Path(tmp), 400, 50)
    if echo:
        print(json.dumps(real), flush=True)
    return {
        "machine": machine(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "workers": workers,
        "partition_size": PARTITION_SIZE,
        "mean_bytes": MEAN_BYTES,
        "planning": planning,
        "driver": driver,
        "per_partition_real_run": real,
    }


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child-plan"]:
        print(json.dumps(measure_planning(int(sys.argv[2]), int(sys.argv[3]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="ten times smaller throughout")
    p.add_argument("--workers", type=int, default=WORKERS)
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    a = p.parse_args(argv)
    summary = measure(a.quick, a.workers)
    a.results_dir.mkdir(parents=True, exist_ok=True)
    path = a.results_dir / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
