"""The operator's benchmark: latency from `kubectl apply` to the runner pod, and the operator's
RSS and CPU while it tracks 200 jobs. Runs on the test control plane (tests/harness).

- Latency: N jobs (default 20) applied one at a time; each job's runner pod is placed on a node
  label no node has (`nodeSelector`), so the pod is created but never started: the measure is
  the operator's, not Ray's. The time is from the moment `kubectl apply` returned to the moment
  a pod watch (started before) delivers the pod's ADDED event. When the runner writes
  status.json, `--progress` also measures apply -> first status.progress (jobs that really run).
- Tracking: 200 jobs with `suspend: true` (Suspended: no pods), then the operator's RSS
  (VmRSS) and its CPU time over a 60 s window of steady state (its resync loop reconciles them
  all every 5 s).

    python bench/operator_bench.py [--jobs 20] [--tracked 200] [--window 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, watch  # noqa: E402

from tests.harness.cluster import Cluster  # noqa: E402
from tests.harness.waiting import wait_for  # noqa: E402
from tests.k8s.operator_support import (  # noqa: E402
    DEMO_DATA,
    OperatorProcess,
    apply,
    example_job,
    install_crd,
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(cluster: Cluster, namespace: str, jobs: int) -> list[float]:
    seen: dict[str, float] = {}
    api = cluster.api_client()
    stop = threading.Event()

    def watch_pods() -> None:
        w = watch.Watch()
        try:
            for event in w.stream(
                client.CoreV1Api(api).list_namespaced_pod, namespace, timeout_seconds=600
            ):
                if event["type"] == "ADDED":
                    seen.setdefault(event["object"].metadata.name, time.monotonic())
                if stop.is_set():
                    w.stop()
        except Exception:
            if not stop.is_set():  # the stream ends with the cluster once measuring is done
                raise

    thread = threading.Thread(target=watch_pods, daemon=True)
    thread.start()
    out = []
    for i in range(jobs):
        job = example_job()
        job["metadata"]["name"] = f"lat-{i}"
        job["spec"]["runner"]["nodeSelector"] = {"bench.datajuicer.io/never": "true"}
        apply(cluster, namespace, job)
        applied = time.monotonic()
        pod = f"lat-{i}-runner-1"
        wait_for(lambda pod=pod: pod in seen, 30, f"pod {pod}")
        out.append(seen[pod] - applied)
    stop.set()
    return out


def first_progress(cluster: Cluster, namespace: str, jobs: int) -> list[float]:
    """apply -> the first status.progress the runner reports (jobs that really run; each is
    deleted once it reported, so that one runs at a time)."""
    cluster.kubectl("create", "configmap", "demo-data", "-n", namespace, f"--from-file={DEMO_DATA}")
    out = []
    for i in range(jobs):
        job = example_job()
        job["metadata"]["name"] = f"prog-{i}"
        apply(cluster, namespace, job)
        applied = time.monotonic()

        def reported(name: str = f"prog-{i}") -> bool:
            obj = json.loads(
                cluster.kubectl("get", "djjob", name, "-n", namespace, "-o", "json").stdout
            )
            return bool((obj.get("status") or {}).get("progress"))

        wait_for(reported, 180, f"first progress of prog-{i}", interval=0.1)
        out.append(time.monotonic() - applied)
        cluster.kubectl("delete", "djjob", f"prog-{i}", "-n", namespace, "--wait=false")
    return out


def tracking(
    cluster: Cluster, namespace: str, op: OperatorProcess, count: int, window: float
) -> dict:
    assert op.proc is not None
    pid = op.proc.pid
    base_rss = rss_mb(pid)
    docs = []
    for i in range(count):
        job = example_job()
        job["metadata"]["name"] = f"track-{i}"
        job["spec"]["suspend"] = True
        docs.append(job)
    for start in range(0, count, 50):
        apply(cluster, namespace, *docs[start : start + 50])

    def all_suspended() -> bool:
        items = json.loads(cluster.kubectl("get", "djjob", "-n", namespace, "-o", "json").stdout)[
            "items"
        ]
        phases = [
            (j.get("status") or {}).get("phase")
            for j in items
            if j["metadata"]["name"].startswith("track-")
        ]
        return len(phases) == count and all(p == "Suspended" for p in phases)

    wait_for(all_suspended, 600, f"{count} jobs Suspended", interval=2)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    peak = rss_mb(pid)
    end = t0 + window
    while time.monotonic() < end:
        peak = max(peak, rss_mb(pid))
        time.sleep(1)  # sampling interval of the measurement, not a synchronisation
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    return {
        "jobs": count,
        "rss_mb_before": round(base_rss, 1),
        "rss_mb_steady": round(rss_mb(pid), 1),
        "rss_mb_peak": round(peak, 1),
        "cpu_cores_avg": round(cpu, 3),
        "window_s": window,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--tracked", type=int, default=200)
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--progress-jobs", type=int, default=20, help="0: skip")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "operator.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dj-op-bench-") as tmp:
        cluster = Cluster(Path(tmp)).start()
        try:
            install_crd(cluster)
            namespace = cluster.create_namespace("bench")
            op = OperatorProcess(cluster, namespace, Path(tmp) / "operator.log").start()
            try:
                lat = latency(cluster, namespace, args.jobs)
                prog = first_progress(cluster, namespace, args.progress_jobs)
                track = tracking(cluster, namespace, op, args.tracked, args.window)
            finally:
                op.stop()
        finally:
            cluster.stop()
    result = {
        "apply_to_pod_s": {
            "n": len(lat),
            "median": round(statistics.median(lat), 3),
            "p95": round(pct(lat, 0.95), 3),
            "max": round(max(lat), 3),
        },
        "apply_to_first_progress_s": {
            "n": len(prog),
            "median": round(statistics.median(prog), 3) if prog else None,
            "p95": round(pct(prog, 0.95), 3) if prog else None,
            "max": round(max(prog), 3) if prog else None,
        },
        "tracking": track,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
