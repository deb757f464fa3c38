"""Per-op time: where one core's time goes on the bench recipe, op by op.

The recipe's ops run in one process over the bench data, through the naive loop
(``bench/naive_loop.py``, 1,000-sample batches, in recipe order, so each op sees only the
samples the ops before it kept). One warm-up pass over the first batches loads what the ops
load once per process (the fastText model, the Unicode tables); then ``--reps`` timed passes.
Time is the CPU time of the thread that runs the ops (every op runs its kernels in it), so a
busy machine slows the run but hardly the figures. Per op: the samples it was given, the
median CPU seconds, microseconds per sample given and its share of all op time. ``run_bench.py`` includes the table in ``docs/benchmarks.md``.

    python bench/op_profile.py --input data.jsonl            # prints the table
    python bench/op_profile.py --input data.jsonl --json     # the raw figures
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_RECIPE = BENCH_DIR / "recipes" / "bench.yaml"
WARMUP_SAMPLES = 2000


def _head(src: Path, dst: Path, n: int) -> None:
    with src.open(encoding="utf-8") as fin, dst.open("w", encoding="utf-8") as fout:
        for i, line in enumerate(fin):
            if i >= n:
                break
            fout.write(line)


def profile(process: list[Any], data: Path, reps: int) -> dict[str, Any]:
    """In this process: warm up, then time every op of ``process`` over ``data`` ``reps`` times."""
    sys.path.insert(0, str(BENCH_DIR))
    import naive_loop

    ops = naive_loop.load_ops(process)
    seconds: list[list[float]] = [[] for _ in ops]
    samples = [0] * len(ops)
    n_in = 0
    with tempfile.TemporaryDirectory(prefix="dj-op-profile-") as tmp:
        out = Path(tmp) / "kept.jsonl"
        warm = Path(tmp) / "warm.jsonl"
        _head(data, warm, WARMUP_SAMPLES)
        naive_loop.run(ops, [warm], out)
        for _ in range(reps):
            secs = [0.0] * len(ops)
            samples = [0] * len(ops)
            n_in, _ = naive_loop.run(
                ops, [data], out, op_seconds=secs, op_samples=samples, clock=time.thread_time
            )
            for k, s in enumerate(secs):
                seconds[k].append(s)
    med = [statistics.median(s) for s in seconds]
    total = sum(med)
    rows = [
        {
            "op": op.name,
            "samples": samples[k],
            "seconds": round(med[k], 4),
            "us_per_sample": round(med[k] / samples[k] * 1e6, 1) if samples[k] else None,
            "share": round(med[k] / total, 4) if total else None,
        }
        for k, op in enumerate(ops)
    ]
    return {
        "samples": n_in,
        "reps": reps,
        "ops_seconds": round(total, 4),
        "ops_samples_per_s": round(n_in / total, 1) if total else None,
        "rows": rows,
    }


def measure(process: list[Any], data: Path, reps: int) -> dict[str, Any]:
    """``profile`` in a fresh child process (this interpreter), with the load around it."""
    load_start = os.getloadavg()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--input", str(data), "--json"]
    cmd += ["--reps", str(reps), "--process-json", json.dumps(process)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(res.stdout)
    result["loadavg_start"] = load_start
    result["loadavg_end"] = os.getloadavg()
    return result


def table(prof: dict[str, Any]) -> str:
    """The per-op table in markdown, in recipe order."""
    lines = [
        "| op | samples in | CPU seconds | µs / sample | share of op time |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in prof["rows"]:
        us = "n/a" if r["us_per_sample"] is None else f"{r['us_per_sample']:,.1f}"
        share = "n/a" if r["share"] is None else f"{r['share'] * 100:.1f}%"
        lines.append(f"| {r['op']} | {r['samples']:,} | {r['seconds']:.3f} | {us} | {share} |")
    lines.append(
        f"| all ops | {prof['samples']:,} | {prof['ops_seconds']:.3f} | "
        f"{prof['ops_seconds'] / max(prof['samples'], 1) * 1e6:,.1f} | 100% |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, required=True, help="bench JSONL (bench/generate.py)")
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    p.add_argument("--process-json", help="the recipe's process list as JSON (overrides --recipe)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    a = p.parse_args(argv)
    if a.process_json:
        process = json.loads(a.process_json)
    else:
        process = yaml.safe_load(a.recipe.read_text())["process"]
    prof = profile(process, a.input, a.reps)
    print(json.dumps(prof, indent=2) if a.json else table(prof))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
