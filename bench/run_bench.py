"""The benchmark: dj-runner against a naive loop and Data-Juicer's own executors, side by side.

One run measures every engine on the same generated data, in interleaved repetitions (the
order rotates each repetition, so a noisy neighbour hurts every engine alike), and reports
medians and ratios:

- ``runner``: ``dj-runner run`` with every_op parquet checkpoints and the event log on;
- ``runner_nockpt``: the same with checkpoints disabled (the cost of checkpointing);
- ``runner_noevents``: every_op checkpoints, event log off (the cost of the event log);
- ``naive``: ``bench/naive_loop.py``, the same ops from dj_runner's registry in one plain loop;
- ``dj_default``: Data-Juicer 1.6.1 ``dj-process`` with ``executor_type: default``;
- ``dj_ray``: Data-Juicer 1.6.1 ``executor_type: ray_partitioned`` with every_op checkpoints.

Beside the engines, the same run measures ``EventLogger.log`` alone and every checkpoint
format and compression on the N input (``bench/formats_bench.py``, ``--formats-reps``) and
each op's time in one process on the N input (``bench/op_profile.py``, ``--op-profile-reps``);
after the engines, recovery from random SIGKILLs (``bench/recovery_bench.py``,
``--recovery-kills``), scale in simulation (``bench/scale_sim.py``, ``--scale-sim``) and the
driver's per-partition traffic with a bucket work dir (``bench/scale_bucket.py``).

Data-Juicer runs in its own venv (``bench/dj_venv.sh``) on a text-only copy of the input.
Throughput is samples in / wall seconds of the whole command, start-up included; the engines'
own job time is reported beside it. Peak memory is the peak of the summed RSS (and PSS) of the
command's whole process tree (driver, Ray's daemons and workers), polled from /proc. The kept
texts of every engine are compared, in order, with the runner's. Raw results go to
``bench/results/``; the summary and plots are rendered into ``docs/benchmarks.md``.

    python bench/run_bench.py                      # default sizes, 3 repetitions
    python bench/run_bench.py -n 2000 --reps 1 --no-docs   # a quick smoke run
    python bench/run_bench.py --report-only bench/results/<run>/results.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import generate  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_RESULTS = BENCH_DIR / "results"
DEFAULT_RECIPE = BENCH_DIR / "recipes" / "bench.yaml"
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
IMG_DIR = REPO_ROOT / "docs" / "img"
PROJECT_BIN = Path(sys.executable).parent

ENGINES: dict[str, str] = {
    "runner": "dj-runner, every_op parquet checkpoints, event log on",
    "runner_nockpt": "dj-runner, checkpoints disabled, event log on",
    "runner_noevents": "dj-runner, every_op parquet checkpoints, event log off",
    "runner_1cpu": "dj-runner as `runner`, on one core (CPU affinity and np: 1)",
    "runner_ray": "dj-runner as `runner`, on the embedded Ray whatever the input's size",
    "naive": "naive single-process loop over dj-runner's ops",
    "dj_default": "Data-Juicer 1.6.1, executor_type: default",
    "dj_ray": "Data-Juicer 1.6.1, executor_type: ray_partitioned, every_op checkpoints",
}
#: The engines ``runner`` is compared with, as ratios of throughput.
RATIO_ENGINES = (
    "dj_default",
    "dj_ray",
    "naive",
    "runner_nockpt",
    "runner_noevents",
    "runner_1cpu",
    "runner_ray",
)
RUNNER_ENGINES = ("runner", "runner_nockpt", "runner_noevents", "runner_1cpu", "runner_ray")
DJ_ENGINES = ("dj_default", "dj_ray")
#: Data-Juicer's ray executors refuse its ``document_deduplicator``; this is their exact dedup.
DJ_RAY_OP_RENAMES = {"document_deduplicator": "ray_document_deduplicator"}


# -- measuring a command ---------------------------------------------------------------------


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMonitor(threading.Thread):
    """Polls a process and all its descendants: peak summed RSS and PSS, and CPU seconds."""

    def __init__(self, pid: int, interval: float = 0.2, pss_every: int = 5) -> None:
        super().__init__(daemon=True)
        import psutil

        self._psutil = psutil
        self.pid = pid
        self.interval = interval
        self.pss_every = pss_every
        self.peak_rss = 0
        self.peak_pss = 0
        self.cpu: dict[tuple[int, float], float] = {}
        self.procs: dict[tuple[int, float], Any] = {}
        self.max_procs = 0
        self.peak_by_label: dict[str, int] = {}
        self._labels: dict[tuple[int, float], str] = {}
        self._stop_evt = threading.Event()

    def _label(self, p: Any) -> str:
        """A short name for a process: Ray's title, the script it runs, or its executable."""
        if p.pid == self.pid:
            return "command (driver)"
        try:
            cmd = p.cmdline()
        except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
            return "?"
        if cmd and cmd[0].startswith("ray::"):
            return cmd[0].split()[0]
        for arg in cmd[1:3]:
            if arg.endswith(".py"):
                return Path(arg).name
        return p.name()

    def sample(self, with_pss: bool) -> None:
        ps = self._psutil
        try:
            root = ps.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except (ps.NoSuchProcess, ps.AccessDenied):
            return
        rss = pss = 0
        by_label: dict[str, int] = {}
        for p in procs:
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    p_rss = p.memory_info().rss
                    ct = p.cpu_times()
                rss += p_rss
                if key not in self._labels:
                    self._labels[key] = self._label(p)
                label = self._labels[key]
                by_label[label] = by_label.get(label, 0) + p_rss
                self.cpu[key] = ct.user + ct.system
                self.procs[key] = p
                if with_pss:
                    pss += _pss_kb(p.pid) * 1024
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                continue
        for label, v in by_label.items():
            self.peak_by_label[label] = max(self.peak_by_label.get(label, 0), v)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.max_procs = max(self.max_procs, len(procs))

    def run(self) -> None:
        k = 0
        while not self._stop_evt.is_set():
            # PSS at every poll for the first 2 s (a short command has few polls), then sparser.
            self.sample(with_pss=k < 10 or k % self.pss_every == 0)
            k += 1
            self._stop_evt.wait(self.interval)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join()

    def cleanup(self) -> int:
        """Terminate descendants of the command that outlived it; return how many."""
        left = [p for p in self.procs.values() if p.is_running() and p.pid != os.getpid()]
        for p in left:
            with contextlib.suppress(Exception):
                p.terminate()
        _, alive = self._psutil.wait_procs(left, timeout=10)
        for p in alive:
            with contextlib.suppress(Exception):
                p.kill()
        return len(left)


@dataclass
class RunResult:
    engine: str
    n: int
    rep: int
    rc: int
    wall_s: float
    job_s: float | None
    cpu_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    max_procs: int
    rows_out: int | None = None
    events: int | None = None
    text_digest: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.error is None

    @property
    def throughput(self) -> float:
        return self.n / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def job_throughput(self) -> float | None:
        return self.n / self.job_s if self.job_s else None


def _cpu_times() -> tuple[float, float]:
    """(idle, total) jiffies of all CPUs, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def wait_for_quiet(min_idle: float = 0.85, window: float = 0.5, timeout: float = 30.0) -> float:
    """Wait until the CPUs were at least ``min_idle`` idle over one ``window``.

    Each run then starts on a settled machine, not while the previous engine's processes are
    still exiting or its files are still being written back. Gives up after ``timeout``
    seconds (the machine is shared); returns the idle fraction last seen.
    """
    deadline = time.monotonic() + timeout
    idle = 0.0
    while time.monotonic() < deadline:
        i0, t0 = _cpu_times()
        time.sleep(window)
        i1, t1 = _cpu_times()
        idle = (i1 - i0) / max(t1 - t0, 1.0)
        if idle >= min_idle:
            break
    return idle


def run_command(
    cmd: list[str], env: dict[str, str], log_path: Path, timeout: float, cwd: Path
) -> tuple[int, float, TreeMonitor, str | None]:
    """Run ``cmd`` in its own session, polling its process tree; return (rc, wall, monitor)."""
    error = None
    wait_for_quiet()
    with log_path.open("w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        mon = TreeMonitor(proc.pid)
        mon.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout:.0f}s"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            rc = proc.wait()
        wall = time.perf_counter() - t0
        mon.stop()
        mon.cleanup()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return rc, wall, mon, error


# -- data, recipes and outputs ---------------------------------------------------------------


@dataclass
class Dataset:
    n: int
    full: Path
    text_only: Path
    manifest: dict[str, Any]


def make_dataset(data_dir: Path, n: int, seed: int, root: Path) -> Dataset:
    """Generate (or reuse) N samples: the full JSONL for dj-runner and a text-only copy."""
    d = root / f"n{n}-seed{seed}"
    full, text = d / "data.jsonl", d / "data.text.jsonl"
    mpath = d / "manifest.json"
    if mpath.exists() and full.exists() and text.exists():
        manifest = json.loads(mpath.read_text())
    else:
        d.mkdir(parents=True, exist_ok=True)
        manifest = generate.generate(data_dir, n, full, seed=seed, text_only_out=text)
        mpath.write_text(json.dumps(manifest, indent=2))
    return Dataset(n, full, text, manifest)


def op_name(entry: Any) -> str:
    return next(iter(entry)) if isinstance(entry, dict) else str(entry)


def load_template(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def runner_supported_ops() -> set[str] | None:
    try:
        from dj_runner.ops import all_ops
    except ImportError:
        return None
    return set(all_ops())


def engine_recipe(
    engine: str, template: dict[str, Any], data: Dataset, run_dir: Path, np_: int
) -> tuple[dict[str, Any], Path]:
    """The recipe for one engine and its export path."""
    r = copy.deepcopy(template)
    r.pop("dataset_path", None)
    r.pop("export_path", None)
    out = run_dir / "out.jsonl"
    if engine in RUNNER_ENGINES or engine == "naive":
        r.update(
            dataset_path=str(data.full),
            export_path=str(out),
            np=1 if engine == "runner_1cpu" else np_,
        )
        if engine != "naive":
            r["storage_format"] = "parquet"
            ckpt = engine != "runner_nockpt"
            r["checkpoint"] = {"enabled": ckpt, "strategy": "every_op" if ckpt else "disabled"}
            r["event_logging"] = {"enabled": engine != "runner_noevents"}
    elif engine == "dj_default":
        r.update(
            dataset_path=str(data.text_only),
            export_path=str(out),
            np=np_,
            executor_type="default",
            work_dir=str(run_dir / "work"),
        )
    elif engine == "dj_ray":
        r["process"] = [
            {DJ_RAY_OP_RENAMES.get(op_name(e), op_name(e)): (e or {}).get(op_name(e))}
            if isinstance(e, dict)
            else DJ_RAY_OP_RENAMES.get(str(e), str(e))
            for e in r["process"]
        ]
        r.update(
            dataset_path=str(data.text_only),
            export_path=str(out),
            np=np_,
            executor_type="ray_partitioned",
            ray_address="local",
            work_dir=str(run_dir / "work"),
            # Data-Juicer writes its checkpoints as Parquet whatever the storage format.
            checkpoint={"enabled": True, "strategy": "every_op"},
        )
    else:
        raise ValueError(engine)
    return r, out


def read_texts(path: Path, text_key: str = "text") -> list[str]:
    """The kept texts, in order; a directory export is read file by file in name order."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and ".json" in p.name)
    else:
        files = [path] if path.exists() else []
    texts: list[str] = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    texts.append(json.loads(line).get(text_key))
    return texts


def digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.md5((t or "").encode()).digest())
    return h.hexdigest()


def compare(ref: list[str], other: list[str], examples: int = 3) -> dict[str, Any]:
    """Set and order equality of two engines' kept texts, with a few examples of differences."""
    cr, co = Counter(ref), Counter(other)
    only_ref = cr - co
    only_other = co - cr
    first_div = next((i for i, (a, b) in enumerate(zip(ref, other, strict=False)) if a != b), None)
    if first_div is None and len(ref) != len(other):
        first_div = min(len(ref), len(other))

    def cut(t: str) -> str:
        return t if len(t) <= 240 else t[:240] + "..."

    return {
        "ref_rows": len(ref),
        "other_rows": len(other),
        "same_sequence": ref == other,
        "same_multiset": not only_ref and not only_other,
        "only_in_runner": sum(only_ref.values()),
        "only_in_other": sum(only_other.values()),
        "first_order_divergence": first_div,
        "examples_only_in_runner": [cut(t) for t in list(only_ref)[:examples]],
        "examples_only_in_other": [cut(t) for t in list(only_other)[:examples]],
    }


_JOB_TIME = {
    "runner": re.compile(r"succeeded: \d+ -> (\d+) samples in ([\d.]+)s"),
    "naive": re.compile(r"naive loop: \d+ -> (\d+) samples in ([\d.]+)s"),
    "dj": re.compile(r"Running executor took ([\d.]+) seconds"),
}


def parse_job_time(engine: str, log: str) -> float | None:
    kind = "dj" if engine in DJ_ENGINES else ("naive" if engine == "naive" else "runner")
    m = _JOB_TIME[kind].search(log)
    if not m:
        return None
    return float(m.group(2) if kind != "dj" else m.group(1))


def count_events(work_dir: Path) -> int | None:
    ev = work_dir / "events"
    if not ev.is_dir():
        return None
    n = 0
    for f in ev.glob("events*.jsonl*"):
        with f.open("rb") as fh:
            n += sum(1 for _ in fh)
    return n


# -- one engine run --------------------------------------------------------------------------


@dataclass
class Context:
    template: dict[str, Any]
    dj_venv: Path | None
    np_: int
    timeout: float
    runs_dir: Path
    keep_outputs: bool
    texts: dict[str, list[str]] = field(default_factory=dict)


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    return env


def dj_env(venv: Path, run_dir: Path) -> dict[str, str]:
    env = base_env()
    # Offline guard: Data-Juicer's lazy loader pip/uv-installs missing modules at run time and
    # has no switch to stop it; with no index these fail at once instead of installing.
    env.update(
        DATA_JUICER_CACHE_HOME=str(venv / "dj-cache"),
        PIP_NO_INDEX="1",
        UV_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=str(run_dir / "hf-cache"),
        PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def run_engine(ctx: Context, engine: str, data: Dataset, rep: int) -> RunResult:
    import yaml

    run_dir = ctx.runs_dir / f"{engine}-n{data.n}-r{rep}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    recipe, out = engine_recipe(engine, ctx.template, data, run_dir, ctx.np_)
    recipe_path = run_dir / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = base_env()
    if engine in RUNNER_ENGINES:
        cmd = [str(PROJECT_BIN / "dj-runner"), "run", str(recipe_path)]
        cmd += ["--work-dir", str(run_dir / "work")]
        if engine == "runner_1cpu":
            # The whole process tree (Ray's daemons and workers inherit it) on one core.
            cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd]
        if engine == "runner_ray":
            cmd += ["--engine", "ray"]
    elif engine == "naive":
        cmd = [sys.executable, str(BENCH_DIR / "naive_loop.py"), str(recipe_path)]
    else:
        assert ctx.dj_venv is not None
        env = dj_env(ctx.dj_venv, run_dir)
        cmd = [str(ctx.dj_venv / "bin" / "dj-process"), "--config", str(recipe_path)]
    # Data-Juicer's Ray gets a private temp root (never the machine's /tmp/ray), short enough
    # for Ray's socket paths; removed after the run.
    ray_tmp = tempfile.mkdtemp(prefix="djb-")
    if engine in DJ_ENGINES:
        env.update(RAY_TMPDIR=ray_tmp, TMPDIR=ray_tmp)
    log_path = run_dir / "log.txt"
    try:
        rc, wall, mon, error = run_command(cmd, env, log_path, ctx.timeout, run_dir)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    log = log_path.read_text(errors="replace")
    if rc != 0 and error is None:
        error = f"exit code {rc}: " + " | ".join(log.strip().splitlines()[-3:])[-600:]
    res = RunResult(
        engine=engine,
        n=data.n,
        rep=rep,
        rc=rc,
        wall_s=wall,
        job_s=parse_job_time(engine, log),
        cpu_s=sum(mon.cpu.values()),
        peak_rss_mb=mon.peak_rss / 2**20,
        peak_pss_mb=mon.peak_pss / 2**20,
        max_procs=mon.max_procs,
        error=error,
    )
    top = sorted(mon.peak_by_label.items(), key=lambda kv: -kv[1])[:8]
    res.extra["peak_rss_mb_by_process"] = {k: round(v / 2**20, 1) for k, v in top}
    if res.ok:
        texts = read_texts(out)
        res.rows_out = len(texts)
        res.text_digest = digest(texts)
        key = f"{engine}@{data.n}"
        if key not in ctx.texts:
            ctx.texts[key] = texts
        if engine in RUNNER_ENGINES:
            res.events = count_events(run_dir / "work")
    if res.ok and not ctx.keep_outputs:
        shutil.rmtree(run_dir / "work", ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink()
    return res


# -- event logger micro-benchmark --------------------------------------------------------------


def event_micro(n: int, blocks: int = 5) -> dict[str, Any]:
    """Per-event cost of ``EventLogger.log`` (µs): typical op_complete events, written to disk."""
    from dj_runner.observe.event_log import EventLogger

    per_event: list[float] = []
    block_means: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLogger(Path(tmp), "bench-events")
        for i in range(500):  # warm-up
            log.log("op_start", "warm-up", partition_id=i)
        for _ in range(blocks):
            t_block = time.perf_counter_ns()
            for i in range(n // blocks):
                t0 = time.perf_counter_ns()
                log.log(
                    "op_complete",
                    "op text_length_filter done",
                    partition_id=i % 16,
                    operation_name="text_length_filter",
                    operation_idx=5,
                    duration=0.123,
                    input_rows=2500,
                    output_rows=2317,
                )
                per_event.append((time.perf_counter_ns() - t0) / 1000)
            block_means.append((time.perf_counter_ns() - t_block) / 1000 / (n // blocks))
        log.close()
        size = sum(f.stat().st_size for f in Path(tmp).glob("events*.jsonl*"))
    per_event.sort()

    def q(p: float) -> float:
        return per_event[min(len(per_event) - 1, int(p * len(per_event)))]

    return {
        "events": len(per_event),
        "median_us": statistics.median(per_event),
        "p90_us": q(0.90),
        "p99_us": q(0.99),
        "mean_us": statistics.fmean(per_event),
        "block_mean_us_median": statistics.median(block_means),
        "bytes_per_event": size / (len(per_event) + 500),
    }


# -- summary ---------------------------------------------------------------------------------


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    runs: list[RunResult],
    n: int,
    big_n: int | None,
    small_n: int | None = None,
    cores: int = 1,
) -> dict[str, Any]:
    """Per-engine medians and the ratios the targets are judged on (``cores``: the runner's np)."""
    by: dict[str, list[RunResult]] = {}
    for r in runs:
        if r.ok:
            by.setdefault(f"{r.engine}@{r.n}", []).append(r)
    engines: dict[str, Any] = {}
    for key, rs in by.items():
        engines[key] = {
            "reps": len(rs),
            "wall_s": med([r.wall_s for r in rs]),
            "wall_s_all": [round(r.wall_s, 3) for r in rs],
            "job_s": med([r.job_s for r in rs if r.job_s]),
            "throughput": med([r.throughput for r in rs]),
            "throughput_min": min(r.throughput for r in rs),
            "throughput_max": max(r.throughput for r in rs),
            "job_throughput": med([r.job_throughput for r in rs if r.job_throughput]),
            "cpu_s": med([r.cpu_s for r in rs]),
            "peak_rss_mb": med([r.peak_rss_mb for r in rs]),
            "peak_pss_mb": med([r.peak_pss_mb for r in rs]),
            "rows_out": rs[0].rows_out,
            "events": med([r.events for r in rs if r.events is not None]),
            "peak_rss_mb_by_process": max(rs, key=lambda r: r.peak_rss_mb).extra.get(
                "peak_rss_mb_by_process"
            ),
        }

    def thr(engine: str, size: int = n, job: bool = False) -> float | None:
        e = engines.get(f"{engine}@{size}")
        return None if e is None else e["job_throughput" if job else "throughput"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    ratios: dict[str, Any] = {}
    for job in (False, True):
        sfx = "_job" if job else ""
        base = thr("runner", job=job)
        for other in RATIO_ENGINES:
            ratios[f"runner_vs_{other}{sfx}"] = ratio(base, thr(other, job=job))
        nock = thr("runner_nockpt", job=job)
        if not job:
            cpu = {k.split("@")[0]: e["cpu_s"] for k, e in engines.items() if k.endswith(f"@{n}")}
            for other in ("dj_default", "dj_ray", "naive"):
                if cpu.get("runner") and cpu.get(other):
                    ratios[f"cpu_{other}_over_runner"] = cpu[other] / cpu["runner"]
        ratios[f"checkpoint_cost{sfx}"] = 1 - base / nock if base and nock else None
    # Paired: the ratio within each repetition (runs minutes apart share the machine's load),
    # then the median over repetitions; steadier than a ratio of medians on a noisy machine.
    per_rep: dict[tuple[str, int], dict[int, float]] = {}
    for r in runs:
        if r.ok:
            per_rep.setdefault((r.engine, r.n), {})[r.rep] = r.throughput
    base_reps = per_rep.get(("runner", n), {})
    for other in RATIO_ENGINES:
        other_reps = per_rep.get((other, n), {})
        pairs = [base_reps[k] / other_reps[k] for k in base_reps if k in other_reps]
        ratios[f"paired_runner_vs_{other}"] = med(pairs)
        ratios[f"paired_runner_vs_{other}_reps"] = len(pairs)
    if ratios.get("paired_runner_vs_runner_nockpt"):
        ratios["paired_checkpoint_cost"] = 1 - ratios["paired_runner_vs_runner_nockpt"]
    if big_n:
        for other in ("dj_default", "dj_ray", "naive"):
            for job in (False, True):
                sfx = "_job" if job else ""
                r_big = ratio(thr("runner", big_n, job), thr(other, big_n, job))
                if r_big is not None:
                    ratios[f"big_runner_vs_{other}{sfx}"] = r_big
    run_n, run_noev = engines.get(f"runner@{n}"), engines.get(f"runner_noevents@{n}")
    if run_n and run_noev and run_n.get("events"):
        ratios["event_cost_us_e2e"] = (run_n["wall_s"] - run_noev["wall_s"]) / run_n["events"] * 1e6
    for size, pfx in ((n, ""), (big_n, "big_")):
        if not size:
            continue
        one, many = thr("runner_1cpu", size), thr("runner", size)
        if one and many:
            ratios[f"{pfx}parallel_efficiency"] = many / (cores * one)
        run_e, dj_e = engines.get(f"runner@{size}"), engines.get(f"dj_default@{size}")
        if run_e and dj_e and dj_e["peak_pss_mb"]:
            ratios[f"{pfx}pss_saving_vs_dj_default"] = (
                1 - run_e["peak_pss_mb"] / dj_e["peak_pss_mb"]
            )
            ratios[f"{pfx}rss_saving_vs_dj_default"] = (
                1 - run_e["peak_rss_mb"] / dj_e["peak_rss_mb"]
            )
    if big_n and thr("runner", big_n):
        ratios["big_samples_per_s_per_core"] = thr("runner", big_n) / cores
    if small_n and engines.get(f"runner@{small_n}"):
        ratios["small_job_wall_s"] = engines[f"runner@{small_n}"]["wall_s"]
        ratios["small_job_cpu_s"] = engines[f"runner@{small_n}"]["cpu_s"]
    if big_n:
        # Memory growth on one engine, the embedded Ray at both sizes (`runner_ray`; `auto`
        # runs both on the local engine, whose growth the engines table shows beside it).
        small = engines.get(f"runner_ray@{n}")
        big = engines.get(f"runner_ray@{big_n}")
        if small and big:
            ratios["rss_growth_10x"] = big["peak_rss_mb"] / small["peak_rss_mb"] - 1
            ratios["pss_growth_10x"] = (
                big["peak_pss_mb"] / small["peak_pss_mb"] - 1 if small["peak_pss_mb"] else None
            )
    return {"engines": engines, "ratios": ratios}


def equality(ctx: Context, n: int) -> dict[str, Any]:
    ref = ctx.texts.get(f"runner@{n}")
    out: dict[str, Any] = {}
    if ref is None:
        return out
    for engine in ENGINES:
        if engine == "runner" or f"{engine}@{n}" not in ctx.texts:
            continue
        out[engine] = compare(ref, ctx.texts[f"{engine}@{n}"])
    return out


def machine() -> dict[str, Any]:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


# -- main ------------------------------------------------------------------------------------


def ensure_bench_requirements() -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        req = BENCH_DIR / "requirements.txt"
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-r", str(req)])


def ensure_plot_venv() -> Path:
    """The Python of the bench's plotting venv (matplotlib), made once outside the repository:
    matplotlib brings numpy, which must not be in the venv the runner is measured in."""
    req = BENCH_DIR / "plot-requirements.txt"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "datajuicer-operator" / "bench" / "plot-venv"
    stamp, want = venv / ".bench-installed", req.read_text()
    if not (stamp.exists() and stamp.read_text() == want):
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.check_call([*pip, "-r", str(req)])
        stamp.write_text(want)
    return venv / "bin" / "python"


def ensure_dj_venv(path: Path | None) -> Path:
    cmd = ["bash", str(BENCH_DIR / "dj_venv.sh")] + ([str(path)] if path else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def runner_available() -> bool:
    exe = PROJECT_BIN / "dj-runner"
    if not exe.exists():
        return False
    r = subprocess.run([str(exe), "--help"], capture_output=True, timeout=120)
    return r.returncode == 0


#: Compiles the bytecode of the installed dj_runner package (run by the venv's Python).
COMPILE_RUNNER = (
    "import compileall, os, sys, dj_runner; "
    "sys.exit(not compileall.compile_dir(os.path.dirname(dj_runner.__file__), quiet=1))"
)


def compile_runner_bytecode(python: Path) -> None:
    """Write the bytecode of ``python``'s dj_runner package, as a wheel install (pip compiles
    at install) and the image (``compileall``) have it. An editable install gets it at first
    import, unless ``PYTHONDONTWRITEBYTECODE`` is set: then every process of every run would
    compile each module it imports (measured: 0.1 to 0.15 s of a 12-sample job), which is a
    cost of the development checkout, not of the runner. Python still checks each file
    against its source, so bytecode left from older sources is never used."""
    subprocess.run([str(python), "-c", COMPILE_RUNNER], check=True, timeout=300)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--num-samples", type=int, default=10000)
    p.add_argument("--scale", type=int, default=10, help="the runner is also run at N*scale")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rss-reps", type=int, default=2, help="runner repetitions at N*scale")
    p.add_argument(
        "--big-engines",
        default="runner,dj_default,naive,runner_1cpu,runner_ray",
        help="engines also run at N*scale (comma-separated); others than runner run once",
    )
    p.add_argument(
        "--extra-reps",
        type=int,
        default=2,
        help="more repetitions of the quick engines (runner variants, naive) after --reps",
    )
    p.add_argument(
        "--small-n",
        type=int,
        default=12,
        help="samples of the small job (runner, whole command) run in every repetition; 0 skips",
    )
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--dj-venv", type=Path, help="Data-Juicer venv (default: dj_venv.sh's)")
    p.add_argument("--np", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--event-micro", type=int, default=50000, help="events to time; 0 skips")
    p.add_argument(
        "--formats-reps",
        type=int,
        default=3,
        help="repetitions of each checkpoint format on the N input (formats_bench.py); 0 skips",
    )
    p.add_argument("--op-diff-limit", type=int, default=3000, help="samples; 0 skips")
    p.add_argument(
        "--op-profile-reps",
        type=int,
        default=3,
        help="repetitions of the per-op time on the N input (op_profile.py); 0 skips",
    )
    p.add_argument(
        "--recovery-kills",
        type=int,
        default=100,
        help="SIGKILLs and resumes of a small job, after the engines (recovery_bench.py); 0 skips",
    )
    p.add_argument(
        "--scale-sim",
        choices=("full", "quick", "off"),
        default="full",
        help="scale in simulation, after the engines (scale_sim.py: 1e9 samples on 512 workers; "
        "quick: ten times smaller)",
    )
    p.add_argument(
        "--scale-bucket-partitions",
        type=int,
        default=200,
        help="partitions of the work dir scanned in a bucket (scale_bucket.py, on the test S3 "
        "server); 0 skips",
    )
    p.add_argument("--keep-outputs", action="store_true")
    p.add_argument(
        "--no-docs", action="store_true", help="do not render docs/benchmarks.md and its plots"
    )
    p.add_argument("--report-only", type=Path, help="render the docs from a results.json")
    a = p.parse_args(argv)

    ensure_bench_requirements()
    if a.report_only:
        import report

        saved = json.loads(a.report_only.read_text())
        # The summary is derived again from the raw runs, so a report reflects this code's
        # ratios (a run's own summary is what its code computed).
        sizes = sorted(int(k) for k in saved["datasets"])
        n = int(saved["args"]["num_samples"])
        big = [k for k in sizes if k > n]
        small = [k for k in sizes if k < n]
        saved["summary"] = summarize(
            [RunResult(**r) for r in saved["runs"]],
            n,
            big[0] if big else None,
            small[0] if small else None,
            int(saved["args"]["np"]),
        )
        report.write(saved, DOCS, IMG_DIR, ensure_plot_venv())
        print(f"wrote {DOCS}")
        return 0

    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        p.error(f"unknown engines: {sorted(unknown)}; choose from {list(ENGINES)}")
    notes: list[str] = []
    if any(e in RUNNER_ENGINES for e in engines) and not runner_available():
        notes.append("dj-runner is not installed or not working: runner engines skipped")
        engines = [e for e in engines if e not in RUNNER_ENGINES]
    elif any(e in RUNNER_ENGINES or e == "naive" for e in engines):
        compile_runner_bytecode(PROJECT_BIN / "python")
    template = load_template(a.recipe)
    supported = runner_supported_ops()
    dropped: list[str] = []
    if supported is not None:
        keep = [e for e in template["process"] if op_name(e) in supported]
        dropped = [op_name(e) for e in template["process"] if op_name(e) not in supported]
        template["process"] = keep
    dj_venv = None
    if any(e in DJ_ENGINES for e in engines):
        print("preparing the Data-Juicer venv...", file=sys.stderr)
        dj_venv = ensure_dj_venv(a.dj_venv)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = a.results_dir / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data_root = a.results_dir / "data"
    n, big_n = a.num_samples, a.num_samples * a.scale if a.scale > 1 else None
    print(f"generating {n} samples (and {big_n})...", file=sys.stderr)
    datasets = {n: make_dataset(a.data_dir, n, a.seed, data_root)}
    wanted_big = {e.strip() for e in a.big_engines.split(",")} & set(engines)
    if big_n and wanted_big and (a.rss_reps > 0 or wanted_big - {"runner"}):
        datasets[big_n] = make_dataset(a.data_dir, big_n, a.seed, data_root)
    else:
        big_n = None
    small_n = a.small_n if a.small_n > 0 and "runner" in engines else None
    if small_n:
        datasets[small_n] = make_dataset(a.data_dir, small_n, a.seed, data_root)
    ctx = Context(template, dj_venv, a.np, a.timeout, out_dir / "runs", a.keep_outputs)

    results: dict[str, Any] = {
        "started": stamp,
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(a).items()},
        "engines": {e: ENGINES[e] for e in engines},
        "recipe_ops": [op_name(e) for e in template["process"]],
        "dropped_ops": dropped,
        "dj_ray_op_renames": DJ_RAY_OP_RENAMES,
        "datasets": {str(k): v.manifest for k, v in datasets.items()},
        "notes": notes,
        "runs": [],
    }
    if a.event_micro > 0 and supported is not None:
        results["event_micro"] = event_micro(a.event_micro)
        print(f"event log: {results['event_micro']['median_us']:.1f} µs/event", file=sys.stderr)
    if a.formats_reps > 0 and supported is not None:
        import formats_bench

        print("checkpoint formats...", file=sys.stderr)
        results["formats"] = formats_bench.measure(datasets[n].full, a.formats_reps, echo=False)

    if a.op_profile_reps > 0 and supported is not None:
        import op_profile

        print("per-op time...", file=sys.stderr)
        results["op_profile"] = op_profile.measure(
            template["process"], datasets[n].full, a.op_profile_reps
        )

    runs: list[RunResult] = []
    big_engines = [e.strip() for e in a.big_engines.split(",") if e.strip() in engines]
    quick = [e for e in engines if e in (*RUNNER_ENGINES, "naive")]
    total = a.reps + (a.extra_reps if quick else 0)
    for rep in range(total):
        jobs = [(e, n) for e in (engines if rep < a.reps else quick)]
        if small_n:
            jobs.append(("runner", small_n))
        if big_n:
            for e in big_engines:
                if (e == "runner" and rep < a.rss_reps) or (e != "runner" and rep == 0):
                    jobs.append((e, big_n))
        k = rep % len(jobs)
        for engine, size in jobs[k:] + jobs[:k]:
            print(f"[rep {rep + 1}/{total}] {engine} n={size} ...", end=" ", file=sys.stderr)
            sys.stderr.flush()
            res = run_engine(ctx, engine, datasets[size], rep)
            runs.append(res)
            status = "ok" if res.ok else f"FAILED ({res.error})"
            print(
                f"{status} {res.wall_s:.1f}s {res.throughput:.0f}/s rss {res.peak_rss_mb:.0f}MB",
                file=sys.stderr,
            )
            results["runs"] = [asdict(r) for r in runs]
            (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    results["summary"] = summarize(runs, n, big_n, small_n, a.np)
    results["equality"] = equality(ctx, n)
    if big_n and big_engines != ["runner"]:
        results["equality_big"] = equality(ctx, big_n)
    if dj_venv is not None and a.op_diff_limit > 0:
        import op_diff

        print("op-level agreement with Data-Juicer...", file=sys.stderr)
        try:
            results["op_diff"] = op_diff.run(
                template, datasets[n].text_only, dj_venv, a.op_diff_limit
            )
        except subprocess.CalledProcessError as exc:
            results["notes"].append(f"op diff failed: {exc.stderr.decode()[-500:]}")
    if a.recovery_kills > 0 and "runner" in engines:
        import recovery_bench

        print(f"recovery: {a.recovery_kills} kills and resumes...", file=sys.stderr)
        try:
            results["recovery"] = recovery_bench.measure(
                a.recovery_kills, 300, 50, a.np, 20261207, a.data_dir, echo=False
            )
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            results["notes"].append(f"recovery bench failed: {exc}")
    if a.scale_sim != "off" and "runner" in engines:
        import scale_sim

        print(f"scale in simulation ({a.scale_sim})...", file=sys.stderr)
        results["scale_sim"] = scale_sim.measure(
            a.scale_sim == "quick", scale_sim.WORKERS, echo=False
        )
    if a.scale_bucket_partitions > 0 and "runner" in engines:
        import scale_bucket

        print("the work dir in a bucket, per partition...", file=sys.stderr)
        try:
            results["scale_bucket"] = scale_bucket.measure(a.scale_bucket_partitions, 200)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            results["notes"].append(f"bucket scan not measured: {exc}")
    results["duration_s"] = time.perf_counter() - t_start
    results["machine"]["loadavg_end"] = os.getloadavg()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (a.results_dir / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results["summary"]["ratios"], indent=2), file=sys.stderr)
    print(
        json.dumps(
            {
                k: {kk: vv for kk, vv in v.items() if not kk.startswith("examples")}
                for k, v in results["equality"].items()
            },
            indent=2,
        ),
        file=sys.stderr,
    )
    print(f"results: {out_dir / 'results.json'} ({results['duration_s']:.0f}s)", file=sys.stderr)
    if not a.no_docs:
        import report

        report.write(results, DOCS, IMG_DIR, ensure_plot_venv())
        print(f"wrote {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
