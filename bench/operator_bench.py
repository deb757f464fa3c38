"""The operator at scale: N jobs with live runner pods applied in a burst, on the test control
plane of tests/harness (a real kube-apiserver, etcd and controller-manager, a process node).

Each job is a minimal DataJuicerJob (a one-op recipe, its own templated claim) whose runner
command is `sh -c 'exec sleep 86400'` (the operator's appended `run <recipe> --work-dir ...`
arguments become the shell's unused positional parameters): the pod starts and stays Running,
so the figures are the operator's and the control plane's, not Ray's or Data-Juicer's.

Measured:
- apply -> runner pod created: from the moment each job's create request is sent (8 client
  threads, the whole burst at once) to the pod's ADDED event on a pod watch opened before;
  p50, p99, max.
- steady state, once every pod is Running and every job is Running, over `--window` seconds:
  the operator's RSS (VmRSS, peak of 1 s samples) and CPU (utime + stime), its own API requests
  (`datajuicer_operator_api_requests_total`, the counting hook on its client: every GET, LIST,
  create, patch; kopf's long-lived watch streams are not in it) and its reconciles per minute,
  and every request the API server served per minute (`apiserver_request_total`: the process
  node's and the controller-manager's included, for context).
- during the burst (apply to every job Running): the operator's CPU seconds, its reconciles and
  API requests per job, and the mean reconcile duration.
- `status` bytes per job (the JSON of `.status`), mean and max.

    python bench/operator_bench.py --jobs 100 [--window 60] [--operator-src DIR] [--out FILE]
                                   [--suspended]

`--suspended` creates the jobs with `suspend: true`: each is validated, gets its status and
settles as Suspended without a pod, so 1,000 tracked jobs fit a small machine (no apply -> pod
figure then).

`--operator-src` runs the operator from another checkout (its `runner/` and `operator/` on
PYTHONPATH), to compare two versions on the same machine. A benchmark, not a test: nothing
asserts a figure. Results: bench/results/operator-<N>.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, watch  # noqa: E402

from dj_runner import contract  # noqa: E402
from tests.harness.cluster import Cluster  # noqa: E402
from tests.harness.ports import free_port  # noqa: E402
from tests.harness.waiting import wait_for  # noqa: E402
from tests.k8s.operator_support import (  # noqa: E402
    OPERATOR_BIN,
    install_crd,
    minimal_job,
    prometheus_sum,
)

Obj = dict[str, Any]


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
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Operator:
    """`dj-operator run --namespace NS` with a metrics port, from this or another checkout."""

    def __init__(self, cluster: Cluster, namespace: str, log: Path, src: Path | None) -> None:
        self.metrics_port = free_port()
        live = free_port()
        paths = [str(src / "runner"), str(src / "operator")] if src else []
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]),
        }
        argv = [str(OPERATOR_BIN), "run", "--namespace", namespace]
        argv += ["--metrics-port", str(self.metrics_port), "--liveness-port", str(live)]
        with log.open("ab") as handle:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._serving, 60, f"dj-operator metrics on port {self.metrics_port}")

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"dj-operator exited with {self.proc.returncode}")
        try:
            self.metrics()
            return True
        except OSError:
            return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class PodWatch(threading.Thread):
    """First ADDED time and latest phase of every pod in a namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.added: dict[str, float] = {}
        self.phase: dict[str, str] = {}
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        w = watch.Watch()
        listed = self.core.list_namespaced_pod(self.namespace)
        version = listed.metadata.resource_version
        self.ready.set()
        while not self.stopping.is_set():
            try:
                for event in w.stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=60,
                ):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    self.added.setdefault(pod.metadata.name, time.monotonic())
                    self.phase[pod.metadata.name] = pod.status.phase or ""
                    if self.stopping.is_set():
                        w.stop()
            except Exception:
                if self.stopping.is_set():
                    return
                raise

    def running(self) -> int:
        return sum(1 for p in list(self.phase.values()) if p == "Running")


def list_jobs(custom: client.CustomObjectsApi, namespace: str) -> list[Obj]:
    """Every job of the namespace, 500 a page."""
    items: list[Obj] = []
    token = None
    while True:
        kw: dict[str, Any] = {"limit": 500}
        if token:
            kw["_continue"] = token
        page = custom.list_namespaced_custom_object(
            contract.GROUP, contract.VERSION, namespace, contract.PLURAL, **kw
        )
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


def apiserver_requests(api: client.ApiClient) -> float:
    data = api.call_api("/metrics", "GET", _preload_content=False, auth_settings=["BearerToken"])
    response = data[0] if isinstance(data, tuple) else data
    return prometheus_sum(response.data.decode(), "apiserver_request_total")


def measure(jobs: int, window: float, src: Path | None, workdir: Path, suspended: bool) -> Obj:
    cluster = Cluster(workdir, kuberay=False).start()
    try:
        install_crd(cluster)
        namespace = cluster.create_namespace("bench")
        api = cluster.api_client()
        custom = client.CustomObjectsApi(api)
        operator = Operator(cluster, namespace, workdir / "operator.log", src)
        try:
            pods = PodWatch(api, namespace)
            pods.start()
            assert pods.ready.wait(30), "the pod watch did not start"
            rss_idle = rss_mb(operator.proc.pid)
            burst_text0, burst_cpu0 = operator.metrics(), cpu_seconds(operator.proc.pid)
            sent: dict[str, float] = {}

            def create(i: int) -> None:
                name = f"b-{i:04d}"
                sent[name] = time.monotonic()
                body = minimal_job(name)
                body["spec"]["suspend"] = suspended
                custom.create_namespaced_custom_object(
                    contract.GROUP, contract.VERSION, namespace, contract.PLURAL, body
                )

            burst_start = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(create, range(jobs)))
            burst_s = time.monotonic() - burst_start
            want = "Suspended" if suspended else "Running"
            latency: list[float] = []
            all_created_s = None
            if not suspended:
                runner = {name: f"{name}-runner-1" for name in sent}
                wait_for(
                    lambda: all(p in pods.added for p in runner.values()),
                    120 + jobs,
                    f"{jobs} runner pods created",
                    interval=0.5,
                )
                latency = [pods.added[runner[n]] - sent[n] for n in sent]
                all_created_s = round(max(pods.added[p] for p in runner.values()) - burst_start, 2)
                wait_for(lambda: pods.running() >= jobs, 300 + 2 * jobs, "pods Running", interval=1)

            def all_there() -> bool:
                phases = [
                    (j.get("status") or {}).get("phase") for j in list_jobs(custom, namespace)
                ]
                return phases.count(want) == jobs

            wait_for(all_there, 300 + jobs, f"{jobs} jobs {want}", interval=2)
            all_there_s = time.monotonic() - burst_start
            burst_text1 = operator.metrics()

            def burst(name: str) -> float:
                return prometheus_sum(burst_text1, name) - prometheus_sum(burst_text0, name)

            reconciles = burst("datajuicer_operator_reconciles_total")
            burst_figures = {
                "operator_cpu_s": round(cpu_seconds(operator.proc.pid) - burst_cpu0, 1),
                "reconciles_per_job": round(reconciles / jobs, 1),
                "api_requests_per_job": round(
                    burst("datajuicer_operator_api_requests_total") / jobs, 1
                ),
                "reconcile_mean_s": round(
                    burst("datajuicer_operator_reconcile_duration_seconds_sum") / reconciles, 3
                ),
            }
            # Steady state: nothing changes any more; measure what the operator still does.
            pid = operator.proc.pid
            text0, srv0 = operator.metrics(), apiserver_requests(api)
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            peak = rss_mb(pid)
            end = t0 + window
            while time.monotonic() < end:
                peak = max(peak, rss_mb(pid))
                time.sleep(1)  # the sampling interval of the measurement, not a synchronisation
            elapsed = time.monotonic() - t0
            cpu = (cpu_seconds(pid) - cpu0) / elapsed
            text1, srv1 = operator.metrics(), apiserver_requests(api)
            per_min = 60 / elapsed

            def rate(name: str) -> float:
                return round(
                    (prometheus_sum(text1, name) - prometheus_sum(text0, name)) * per_min, 1
                )

            sizes = [len(json.dumps(j.get("status") or {})) for j in list_jobs(custom, namespace)]
            return {
                "jobs": jobs,
                "operator": str(src) if src else "this checkout",
                "jobs_suspended": suspended,
                "burst_create_s": round(burst_s, 2),
                "apply_to_pod_s": {
                    "p50": round(pct(latency, 0.5), 3),
                    "p99": round(pct(latency, 0.99), 3),
                    "max": round(max(latency), 3),
                }
                if latency
                else None,
                "all_pods_created_s": all_created_s,
                f"all_jobs_{want.lower()}_s": round(all_there_s, 2),
                "burst": burst_figures,
                "steady": {
                    "window_s": round(elapsed, 1),
                    "operator_rss_mb_idle_before": round(rss_idle, 1),
                    "operator_rss_mb": round(rss_mb(pid), 1),
                    "operator_rss_mb_peak": round(peak, 1),
                    "operator_cpu_cores": round(cpu, 3),
                    "operator_api_requests_per_min": rate("datajuicer_operator_api_requests_total"),
                    "operator_reconciles_per_min": rate("datajuicer_operator_reconciles_total"),
                    "apiserver_requests_per_min_all_clients": round((srv1 - srv0) * per_min, 1),
                },
                "status_bytes": {"mean": round(sum(sizes) / len(sizes)), "max": max(sizes)},
            }
        finally:
            pods.stopping.set()
            operator.stop()
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--operator-src", type=Path, help="run the operator from this checkout")
    parser.add_argument(
        "--suspended",
        action="store_true",
        help="create the jobs with suspend: true (tracked, no pods): for job counts whose live"
        " pods would not fit the machine",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.jobs < 1 or args.window <= 0:
        parser.error(f"--jobs must be >= 1 and --window > 0, got {args.jobs} and {args.window}")
    with tempfile.TemporaryDirectory(prefix="dj-op-bench-") as tmp:
        result = measure(args.jobs, args.window, args.operator_src, Path(tmp), args.suspended)
    kind = "suspended" if args.suspended else "running"
    out = args.out or ROOT / "bench" / "results" / f"operator-{kind}-{args.jobs}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
