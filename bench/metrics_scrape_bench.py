"""The operator's metrics at many jobs: index upserts and /metrics renders, two checkouts A/B.

The operator renders its per-job families from its job index at each scrape and reads every
watch event's body into a view (``dj_operator.status.reader``). This times both in one process
for N realistic job bodies (half local, half kuberay mode, each Running with a runner pod, a
first checkpoint and its startup milestones in ``status.timeline``): N x 2 upserts (Starting,
then Running), then R renders of the whole registry. With ``--a DIR --b DIR`` it runs the
measurement from two checkouts in turn (A, B, A, B, ...), each in a fresh interpreter, and
prints the medians and the median of the paired ratios A/B.

    python bench/metrics_scrape_bench.py --jobs 1000 --renders 10            # this checkout
    python bench/metrics_scrape_bench.py --a . --b ../other-checkout --reps 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def body(i: int, phase: str, t0: float) -> dict[str, Any]:
    """A DataJuicerJob as the watch delivers it, Starting or Running."""
    name = f"job-{i}"
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": 1,
        "conditions": [{"type": "Running", "status": "True" if phase == "Running" else "False"}],
        "attempts": [{"index": 1, "podName": f"{name}-runner-1", "startTime": _ts(t0 + 2)}],
        "restarts": 0,
    }
    if phase == "Running":
        status["startTime"] = _ts(t0 + 2)
        status["timeline"] = {
            "podCreated": _ts(t0 + 2),
            "rayReady": _ts(t0 + 5),
            "firstCheckpoint": _ts(t0 + 20),
        }
        status["progress"] = {
            "state": "running",
            "partitionsTotal": 10,
            "partitionsCompleted": 3,
            "partitionsFailed": 0,
            "partitionsRunning": 2,
            "samplesIn": 1234,
            "samplesOut": 1100,
            "samplesRejected": 0,
            "lastCheckpointTime": _ts(t0 + 20),
            "updateTime": _ts(t0 + 30),
        }
    return {
        "apiVersion": "datajuicer.io/v1alpha1",
        "kind": "DataJuicerJob",
        "metadata": {
            "name": name,
            "namespace": f"team-{i % 4}",
            "uid": f"uid-{i}",
            "creationTimestamp": _ts(t0),
        },
        "spec": {"ray": {"mode": "local" if i % 2 else "kuberay"}},
        "status": status,
    }


def measure(jobs: int, renders: int) -> dict[str, float]:
    """Seconds for the upserts and for the renders, in this interpreter."""
    from prometheus_client.exposition import generate_latest

    from dj_operator.metrics import OperatorMetrics

    t0 = time.time() - 600
    starting = [body(i, "Starting", t0) for i in range(jobs)]
    running = [body(i, "Running", t0) for i in range(jobs)]
    metrics = OperatorMetrics()
    start = time.perf_counter()
    for a, b in zip(starting, running, strict=True):
        metrics.index.upsert(a)
        metrics.index.upsert(b)
    upserts = time.perf_counter() - start
    start = time.perf_counter()
    size = 0
    for _ in range(renders):
        size = len(generate_latest(metrics.registry))
    rendered = time.perf_counter() - start
    return {"upserts_s": upserts, "renders_s": rendered, "bytes": float(size)}


def _run_checkout(src: Path, jobs: int, renders: int) -> dict[str, float]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src / "runner"), str(src / "operator")]),
    }
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            *("--jobs", str(jobs), "--renders", str(renders), "--json"),
        ],
        env=env,
        cwd=src,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--renders", type=int, default=10)
    parser.add_argument("--a", type=Path, help="a checkout to measure (A)")
    parser.add_argument("--b", type=Path, help="a checkout to compare with (B)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one measurement as JSON")
    args = parser.parse_args(argv)
    if args.a is None or args.b is None:
        result = measure(args.jobs, args.renders)
        print(json.dumps(result) if args.json else result)
        return 0
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for _ in range(args.reps):
        runs["A"].append(_run_checkout(args.a.resolve(), args.jobs, args.renders))
        runs["B"].append(_run_checkout(args.b.resolve(), args.jobs, args.renders))
    print(f"{args.jobs} jobs, {args.renders} renders, {args.reps} interleaved runs each")
    for key in ("upserts_s", "renders_s"):
        a = [r[key] for r in runs["A"]]
        b = [r[key] for r in runs["B"]]
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        print(
            f"{key}: A median {statistics.median(a):.3f}, B median {statistics.median(b):.3f},"
            f" paired A/B median {statistics.median(ratios):.3f}"
            f" (min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    print(f"bytes per render: A {runs['A'][-1]['bytes']:.0f}, B {runs['B'][-1]['bytes']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
