"""Recovery: SIGKILL a running dj-runner at random moments, resume it, compare with a clean run.

One clean run of a small job (the bench recipe on ``bench/generate.py`` data, every_op
checkpoints, the event log on, a local work dir) gives the reference export and its duration.
Then, for each trial, a fresh run is started in a fresh work dir and its whole process group is
killed with SIGKILL at an instant drawn uniformly from the clean run's duration; the same
command is started again at once and left to finish. Per trial it records:

- recovery time: from the SIGKILL to the resumed run's first new checkpoint commit (a line
  appended to any partition's ``commits.jsonl`` beyond those present at the kill); a trial
  killed after its last commit has none (the resumed run only exports);
- recovered: the resumed run exited 0 and its export is byte-identical to the clean one.

A draw that lands after the job has ended is not a kill and is drawn again. Results go to
``bench/results/recovery-<time>.json``.

    python bench/recovery_bench.py                 # 100 kills
    python bench/recovery_bench.py --kills 10      # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import generate  # noqa: E402
from run_bench import DEFAULT_DATA_DIR, DEFAULT_RECIPE, DEFAULT_RESULTS  # noqa: E402

POLL_S = 0.005


def machine() -> dict[str, Any]:
    """CPUs, memory and load, from the standard library and /proc alone."""
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem) / 2**20, 1),
        "python": sys.version.split()[0],
    }


def commit_lines(work: Path) -> int:
    """Checkpoint commit records in a local work dir (complete lines of every partition's log)."""
    n = 0
    for log in (work / "checkpoints").glob("p*/commits.jsonl"):
        try:
            n += log.read_bytes().count(b"\n")
        except FileNotFoundError:
            continue
    return n


def write_recipe(root: Path, data: Path, partition_size: int, np_: int) -> Path:
    recipe = yaml.safe_load(DEFAULT_RECIPE.read_text())
    recipe.update(
        dataset_path=str(data),
        export_path="out.jsonl",
        np=np_,
        partition_size=partition_size,
        storage_format="parquet",
        checkpoint={"enabled": True, "strategy": "every_op"},
        event_logging={"enabled": True},
        max_retries=0,
    )
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def start(recipe: Path, run_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``dj-runner run`` in ``run_dir`` (the export is relative to it), in its own session."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dj_runner.cli", "run", str(recipe), "--work-dir", "work"]
    return subprocess.Popen(
        cmd,
        cwd=run_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def trial(
    recipe: Path, run_dir: Path, env: dict[str, str], kill_at: float, clean: bytes
) -> dict[str, Any] | None:
    """One kill and resume; ``None`` when the job ended before the kill instant."""
    proc = start(recipe, run_dir, env)
    t0 = time.monotonic()
    while time.monotonic() - t0 < kill_at and proc.poll() is None:
        time.sleep(POLL_S)
    if proc.poll() is not None:
        return None
    os.killpg(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    proc.wait()
    work = run_dir / "work"
    at_kill = commit_lines(work)
    resumed = start(recipe, run_dir, env)
    first_commit: float | None = None
    while resumed.poll() is None:
        if first_commit is None and commit_lines(work) > at_kill:
            first_commit = time.monotonic() - killed
        time.sleep(POLL_S)
    if first_commit is None and commit_lines(work) > at_kill:
        first_commit = time.monotonic() - killed  # committed in its last poll interval
    out = run_dir / "out.jsonl"
    identical = resumed.returncode == 0 and out.exists() and out.read_bytes() == clean
    return {
        "kill_at_s": round(kill_at, 3),
        "commits_at_kill": at_kill,
        "recovery_s": None if first_commit is None else round(first_commit, 3),
        "resume_rc": resumed.returncode,
        "recovered": identical,
    }


def measure(
    kills: int,
    num_samples: int,
    partition_size: int,
    np_: int,
    seed: int,
    data_dir: Path,
    echo: bool = True,
) -> dict[str, Any]:
    """``kills`` kills and resumes after one clean run; the summary, each trial in ``trials``."""
    rng = random.Random(seed)
    env = dict(os.environ)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dj-recovery-") as tmp:
        root = Path(tmp)
        data = root / "data.jsonl"
        generate.generate(data_dir, num_samples, data, seed=0)
        recipe = write_recipe(root, data, partition_size, np_)
        t0 = time.monotonic()
        clean_proc = start(recipe, root / "clean", env)
        if clean_proc.wait() != 0:
            raise RuntimeError(f"the clean run failed (exit {clean_proc.returncode})")
        clean_s = time.monotonic() - t0
        clean = (root / "clean" / "out.jsonl").read_bytes()
        trials: list[dict[str, Any]] = []
        draws = 0
        while len(trials) < kills:
            draws += 1
            run_dir = root / f"t{draws:04d}"
            res = trial(recipe, run_dir, env, rng.uniform(0.0, clean_s), clean)
            if res is not None:
                trials.append(res)
                if echo:
                    print(json.dumps(res), flush=True)
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    times = [t["recovery_s"] for t in trials if t["recovery_s"] is not None]
    recovered = sum(t["recovered"] for t in trials)
    return {
        "machine": machine(),
        "loadavg_end": os.getloadavg(),
        "loadavg_start": load_start,
        "samples": num_samples,
        "partition_size": partition_size,
        "clean_run_s": round(clean_s, 2),
        "kills": len(trials),
        "draws": draws,
        "recovered": recovered,
        "recovery_rate": recovered / len(trials) if trials else None,
        "recovery_s_median": statistics.median(times) if times else None,
        "recovery_s_p90": statistics.quantiles(times, n=10)[-1] if len(times) >= 2 else None,
        "recovery_s_max": max(times, default=None),
        "with_recovery_time": len(times),
        "trials": trials,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("-n", "--num-samples", type=int, default=300)
    p.add_argument("--partition-size", type=int, default=50)
    p.add_argument("--np", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=20261207)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    a = p.parse_args(argv)
    summary = measure(a.kills, a.num_samples, a.partition_size, a.np, a.seed, a.data_dir)
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / f"recovery-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=2))
    print(f"written: {out}")
    return 0 if summary["recovered"] == summary["kills"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
