"""kuberay mode's benchmark: what running a job on an owned RayCluster costs against `local` mode.

On the test control plane of `tests/harness` with the real KubeRay operator, the operator running
as `dj-operator run`, every pod a process tree on the process node. One job at a time, in
configurations run interleaved (each repetition runs every configuration once, in a rotated
order) so that all meet the same machine noise:

- `local-N`: `ray.mode: local`, the runner's embedded Ray with `np: N` CPUs;
- `kuberay-N`: `ray.mode: kuberay`, a head with no CPUs for tasks and N workers of 1 CPU each,
  the runner driving them over Ray Client.

Every job runs the same recipe (bench/recipes/bench.yaml, ops without parameters written `{}`)
on the same data (`bench/generate.py -n ROWS`, written once into a claim every job mounts), and
every output must be byte-identical. For each run:

- apply -> first partition: from the moment `kubectl apply` returned to the timestamp of the
  first `partition_start` record in the runner's event log. The partition task writes that
  record when it starts on its Ray worker (in kuberay mode, on a worker pod); the clock is the
  host's, shared by every pod here. The path is split at the runner's `job_start` record (its
  process started) and `ray_connected` record (it joined Ray; in kuberay mode also every node
  alive), and in kuberay mode where the job's `ClusterReady` condition is first seen True
  (polled every 0.5 s). A runner slower than SLOW_CONNECT_S to join Ray has its log kept;
- throughput: input rows / (job_complete - processing_start) of the event log (the plan, every
  partition, the global ops and the export; not the pod's or Ray's start-up), split at the
  global op (`global_op_start`, `global_op_complete`), with the ops' own time in the partition
  tasks summed (`op_complete` durations);
- memory: every 0.5 s, the RSS and the PSS summed over each pod's process tree (every container,
  daemons included); the peak per pod, by role (runner, head, worker);
- teardown: from the job's Finished condition to the last Ray pod gone (the operator removes the
  cluster of a finished job).

    python bench/kuberay_bench.py [--rows 16000] [--partition-size 800] [--reps 3]
        [--workers 1,2] [--corpora DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client  # noqa: E402

from dj_runner import contract  # noqa: E402
from dj_runner.observe.event_log import read_events  # noqa: E402
from dj_runner.store.workdir import WorkDir  # noqa: E402
from tests.harness import proctree  # noqa: E402
from tests.harness.cluster import Cluster  # noqa: E402
from tests.harness.ports import free_port, free_ray_ports  # noqa: E402
from tests.harness.waiting import wait_for  # noqa: E402
from tests.k8s.operator_support import (  # noqa: E402
    OperatorProcess,
    apply,
    condition,
    install_crd,
    job_obj,
    short_tmp,
)

sys.path.insert(0, str(ROOT / "bench"))
from generate import DEFAULT_DATA_DIR  # noqa: E402

CLAIM = "bench-data"
SLOW_CONNECT_S = 10.0  # a runner slower than this to join Ray has its log kept in the results
INPUT = "input/bench.jsonl"
OBJECT_STORE_BYTES = "100000000"
SMALL = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
Obj = dict[str, Any]


@dataclass(frozen=True)
class Config:
    mode: str  # local | kuberay
    cpus: int  # np of the embedded Ray, or the number of 1-CPU workers

    @property
    def label(self) -> str:
        return f"{self.mode}-{self.cpus}"


@dataclass
class PodMemory:
    role: str
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    # The peak RSS of each kind of process in the pod (summed over the processes of a kind).
    by_process_rss_mb: dict[str, float] = field(default_factory=dict)
    restarts: int = 0  # the most container restarts seen (a Ray node that failed to start)


# Ray's processes, told apart by their command line (first match wins).
PROCESS_KINDS = (
    ("--mode=specific-server", "ray client server (per client)"),
    ("ray.util.client.server", "ray client proxier"),
    ("health-check", "ray health-check (init container)"),
    ("gcs_server", "gcs_server"),
    ("raylet", "raylet"),
    ("RuntimeEnvAgent", "runtime env agent"),
    ("runtime_env/agent", "runtime env agent"),
    ("DashboardAgent", "dashboard agent"),
    ("dashboard/agent.py", "dashboard agent"),
    ("dashboard/dashboard.py", "dashboard"),
    ("ray-dashboard-", "dashboard"),
    ("autoscaler/_private/monitor.py", "autoscaler monitor"),
    ("log_monitor", "log monitor"),
    ("ray::", "ray worker process"),
    ("default_worker.py", "ray worker process"),
    ("dj-runner", "dj-runner (driver)"),
    ("ray start", "ray start"),
)


def process_kind(pid: int) -> str:
    cmd = proctree.cmdline(pid)
    for marker, kind in PROCESS_KINDS:
        if marker in cmd:
            return kind
    return Path(cmd.split(" ", 1)[0]).name or "?"


@dataclass
class Run:
    config: str
    rep: int
    job: str
    load_before: float
    load_after: float = 0.0
    apply_to_first_partition_s: float = 0.0
    apply_to_cluster_ready_s: float | None = None
    apply_to_runner_start_s: float = 0.0
    apply_to_ray_connected_s: float | None = None
    apply_to_succeeded_s: float = 0.0
    processing_s: float = 0.0
    # processing_s split: the partitions through the per-partition ops (up to the global op),
    # the global op deciding on the driver, the rest (applying its decision, the export).
    partitions_phase_s: float | None = None
    global_op_s: float | None = None
    after_global_s: float | None = None
    # The ops' own time in the partition tasks, summed over partitions (CPU-seconds of work).
    op_task_s: float = 0.0
    rows: int = 0
    partitions: int = 0
    rows_per_s: float = 0.0
    teardown_s: float | None = None
    output_sha256: str = ""
    slow_connect_log: list[str] = field(default_factory=list)
    memory: dict[str, PodMemory] = field(default_factory=dict)


def bench_recipe(name: str, rows_partition: int, np: int) -> Obj:
    recipe = yaml.safe_load((ROOT / "bench" / "recipes" / "bench.yaml").read_text())
    # `- op:` (a null) is dropped by client-side `kubectl apply`: write `- op: {}`.
    recipe["process"] = [
        {op: params or {} for op, params in item.items()} for item in recipe["process"]
    ]
    recipe.update(
        {
            "project_name": "kuberay-bench",
            "dataset_path": INPUT,
            "export_path": f"output/{name}.jsonl",
            "partition_size": rows_partition,
            "np": np,
        }
    )
    return recipe


def job_manifest(name: str, config: Config, partition_size: int) -> Obj:
    ray: Obj = {"mode": config.mode}
    if config.mode == "kuberay":
        ports = free_ray_ports()
        store = {"object-store-memory": OBJECT_STORE_BYTES}
        ray.update(
            {
                "readyTimeoutSeconds": 300,
                "headGroup": {
                    "rayStartParams": {"num-cpus": "0", **store},
                    "resources": SMALL,
                    "ports": {"gcs": ports.gcs, "client": ports.client, "dashboard": free_port()},
                },
                "workerGroups": [
                    {
                        "name": "workers",
                        "replicas": config.cpus,
                        "minReplicas": config.cpus,
                        "maxReplicas": config.cpus,
                        "rayStartParams": {"num-cpus": "1", **store},
                        "resources": SMALL,
                    }
                ],
            }
        )
    return short_tmp(
        {
            "apiVersion": contract.API_VERSION,
            "kind": "DataJuicerJob",
            "metadata": {"name": name},
            "spec": {
                "recipe": bench_recipe(name, partition_size, config.cpus),
                "storage": {"claimName": CLAIM},
                "ray": ray,
                # A failure must show, not be retried into a slower figure.
                "backoffLimit": 0,
            },
        }
    )


def prepare_claim(cluster: Cluster, core: client.CoreV1Api, namespace: str, args: Any) -> Path:
    """The claim every job mounts, with the generated input in it."""
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": CLAIM},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "10Gi"}},
            },
        },
    )
    wait_for(
        lambda: (
            core.read_namespaced_persistent_volume_claim(CLAIM, namespace).status.phase == "Bound"
        ),
        60,
        f"claim {CLAIM} bound",
    )
    root = cluster.node.pvc_dir(namespace, CLAIM)
    target = root / INPUT
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "generate.py"),
            "-n",
            str(args.rows),
            "--out",
            str(target),
            "--data-dir",
            str(args.corpora),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return root


class MemorySampler:
    """Every `interval` s, the RSS and PSS summed over each of a job's pods' process trees."""

    def __init__(
        self, cluster: Cluster, core: client.CoreV1Api, namespace: str, job: str, interval=0.5
    ) -> None:
        self.cluster = cluster
        self.core = core
        self.namespace = namespace
        self.job = job
        self.interval = interval
        self.pods: dict[str, PodMemory] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _roles(self) -> dict[str, tuple[str, int]]:
        """Each pod of the job: its role and its containers' restarts so far."""
        roles = {}
        selectors = (f"{contract.LABEL_JOB}={self.job}", f"ray.io/cluster={self.job}-ray")
        for selector in selectors:
            for pod in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items:
                labels = pod.metadata.labels or {}
                statuses = (pod.status.container_statuses or []) if pod.status else []
                restarts = sum(cs.restart_count or 0 for cs in statuses)
                roles[pod.metadata.name] = (labels.get("ray.io/node-type") or "runner", restarts)
        return roles

    def _loop(self) -> None:
        # The interval is the measurement's sampling period, not a synchronisation.
        while not self._stop.wait(self.interval):
            try:
                roles = self._roles()
            except Exception:  # the API may be busy: a missed sample, not a failed run
                continue
            for pod, (role, restarts) in roles.items():
                mem = self.pods.setdefault(pod, PodMemory(role))
                mem.restarts = max(mem.restarts, restarts)
                pids = self.cluster.node.pod_processes(self.namespace, pod)
                if not pids:
                    continue
                kinds: dict[str, float] = {}
                for pid in pids:
                    kind = process_kind(pid)
                    kinds[kind] = kinds.get(kind, 0.0) + proctree.rss_bytes(pid) / 2**20
                rss = sum(kinds.values())
                pss = sum(proctree.pss_bytes(p) for p in pids) / 2**20
                mem.peak_rss_mb = round(max(mem.peak_rss_mb, rss), 1)
                mem.peak_pss_mb = round(max(mem.peak_pss_mb, pss), 1)
                for kind, mb in kinds.items():
                    peak = max(mem.by_process_rss_mb.get(kind, 0.0), mb)
                    mem.by_process_rss_mb[kind] = round(peak, 1)


def first(events: list, kind: str) -> Any:
    found = [e for e in events if e.event_type == kind]
    return found[0] if found else None


def run_job(
    cluster: Cluster,
    core: client.CoreV1Api,
    namespace: str,
    claim_root: Path,
    config: Config,
    rep: int,
    partition_size: int,
    timeout: float,
) -> Run:
    name = f"{config.mode[:2]}{config.cpus}-r{rep}"
    run = Run(config.label, rep, name, load_before=round(os.getloadavg()[0], 2))
    manifest = job_manifest(name, config, partition_size)
    with MemorySampler(cluster, core, namespace, name) as sampler:
        apply(cluster, namespace, manifest)
        applied = time.time()

        ready_seen: list[float] = []

        def finished() -> Obj | None:
            job = job_obj(cluster, namespace, name)
            if not ready_seen and condition(job, "ClusterReady").get("status") == "True":
                ready_seen.append(time.time())
            return job if condition(job, "Finished").get("status") == "True" else None

        job = wait_for(finished, timeout, f"djjob {name} Finished", interval=0.5)
        done = time.time()
    phase = job["status"]["phase"]
    if phase != "Succeeded":
        raise RuntimeError(f"{name} ended {phase}: {json.dumps(job['status'].get('failure'))}")
    run.apply_to_succeeded_s = round(done - applied, 2)
    run.memory = sampler.pods
    work_dir = claim_root / ".datajuicer" / namespace / name
    events = read_events(WorkDir(work_dir).events_dir)
    start = first(events, "partition_start")
    begin, end = first(events, "processing_start"), first(events, "job_complete")
    if start is None or begin is None or end is None:
        raise RuntimeError(f"{name}: the event log in {work_dir} lacks the records measured")
    run.apply_to_first_partition_s = round(start.timestamp - applied, 2)
    connected = first(events, "ray_connected")
    runner_start = first(events, "job_start")
    run.apply_to_runner_start_s = round(runner_start.timestamp - applied, 2)
    if connected.timestamp - runner_start.timestamp > SLOW_CONNECT_S:
        # Why the runner took long to join Ray: its own words (retries, nodes alive).
        log = cluster.node.logs(namespace, f"{name}-runner-1")
        run.slow_connect_log = [line[:300] for line in log.splitlines()[:40]]
    if config.mode == "kuberay":
        run.apply_to_cluster_ready_s = round(ready_seen[0] - applied, 2) if ready_seen else None
        run.apply_to_ray_connected_s = round(connected.timestamp - applied, 2)
    starts = [e for e in events if e.event_type == "partition_start"]
    run.partitions = len({e.partition_id for e in starts})
    run.rows = sum(int(e.get("input_rows") or 0) for e in starts)
    run.processing_s = round(end.timestamp - begin.timestamp, 2)
    global_start, global_end = first(events, "global_op_start"), first(events, "global_op_complete")
    if global_start is not None and global_end is not None:
        run.partitions_phase_s = round(global_start.timestamp - begin.timestamp, 2)
        run.global_op_s = round(global_end.timestamp - global_start.timestamp, 2)
        run.after_global_s = round(end.timestamp - global_end.timestamp, 2)
    run.op_task_s = round(
        sum(float(e.get("duration") or 0) for e in events if e.event_type == "op_complete"), 2
    )
    run.rows_per_s = round(run.rows / run.processing_s, 1) if run.processing_s else 0.0
    output = claim_root / "output" / f"{name}.jsonl"
    run.output_sha256 = hashlib.sha256(output.read_bytes()).hexdigest()
    if config.mode == "kuberay":
        gone = wait_for(
            lambda: (
                not core.list_namespaced_pod(
                    namespace, label_selector=f"ray.io/cluster={name}-ray"
                ).items
                and time.time()
            ),
            120,
            f"the Ray pods of {name} gone",
            interval=0.2,
        )
        run.teardown_s = round(gone - done, 2)
    cluster.kubectl("delete", "djjob", name, "-n", namespace, "--wait=true", timeout=180)
    wait_for(
        lambda: (
            not core.list_namespaced_pod(
                namespace, label_selector=f"{contract.LABEL_JOB}={name}"
            ).items
        ),
        120,
        f"the runner pods of {name} gone",
    )
    run.load_after = round(os.getloadavg()[0], 2)
    return run


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def summarise(runs: list[Run], configs: list[Config]) -> Obj:
    out: Obj = {}
    for config in configs:
        mine = [r for r in runs if r.config == config.label]
        mem: dict[str, list[PodMemory]] = {}
        for r in mine:
            for pod in r.memory.values():
                if pod.peak_rss_mb > 0:  # a pod seen before any of its processes ran
                    mem.setdefault(pod.role, []).append(pod)
        out[config.label] = {
            "runs": len(mine),
            "apply_to_first_partition_s": median([r.apply_to_first_partition_s for r in mine]),
            "apply_to_first_partition_max_s": max(
                (r.apply_to_first_partition_s for r in mine), default=None
            ),
            "apply_to_cluster_ready_s": median([r.apply_to_cluster_ready_s for r in mine]),
            "apply_to_runner_start_s": median([r.apply_to_runner_start_s for r in mine]),
            "apply_to_ray_connected_s": median([r.apply_to_ray_connected_s for r in mine]),
            "apply_to_succeeded_s": median([r.apply_to_succeeded_s for r in mine]),
            "processing_s": median([r.processing_s for r in mine]),
            "partitions_phase_s": median([r.partitions_phase_s for r in mine]),
            "global_op_s": median([r.global_op_s for r in mine]),
            "after_global_s": median([r.after_global_s for r in mine]),
            "op_task_s": median([r.op_task_s for r in mine]),
            "rows_per_s": median([r.rows_per_s for r in mine]),
            "teardown_s": median([r.teardown_s for r in mine]),
            "ray_pod_restarts": sum(
                p.restarts for r in mine for p in r.memory.values() if p.role != "runner"
            ),
            "peak_rss_mb": {role: median([p.peak_rss_mb for p in m]) for role, m in mem.items()},
            "peak_pss_mb": {role: median([p.peak_pss_mb for p in m]) for role, m in mem.items()},
            "peak_rss_mb_by_process": {
                role: {
                    kind: median([p.by_process_rss_mb.get(kind, 0.0) for p in m])
                    for kind in sorted({k for p in m for k in p.by_process_rss_mb})
                }
                for role, m in mem.items()
            },
        }
    for cpus in sorted({c.cpus for c in configs}):
        local, kuberay = out.get(f"local-{cpus}"), out.get(f"kuberay-{cpus}")
        if not local or not kuberay:
            continue
        paired = []
        for rep in sorted({r.rep for r in runs}):
            a = [r for r in runs if r.rep == rep and r.config == f"local-{cpus}"]
            b = [r for r in runs if r.rep == rep and r.config == f"kuberay-{cpus}"]
            if a and b and a[0].rows_per_s:
                paired.append(b[0].rows_per_s / a[0].rows_per_s)
        out[f"kuberay-{cpus}/local-{cpus}"] = {
            "throughput_ratio_of_medians": round(kuberay["rows_per_s"] / local["rows_per_s"], 3),
            "throughput_ratio_paired_median": round(statistics.median(paired), 3)
            if paired
            else None,
            "first_partition_extra_s": round(
                kuberay["apply_to_first_partition_s"] - local["apply_to_first_partition_s"], 2
            ),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16000, help="input rows (bench/generate.py)")
    parser.add_argument("--partition-size", type=int, default=800)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every configuration")
    parser.add_argument("--workers", default="1,2", help="CPU counts compared, comma-separated")
    parser.add_argument(
        "--corpora", type=Path, default=DEFAULT_DATA_DIR, help="bench/generate.py --data-dir"
    )
    parser.add_argument("--job-timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kuberay.json")
    args = parser.parse_args()
    cpus = [int(n) for n in args.workers.split(",")]
    configs = [Config(mode, n) for n in cpus for mode in ("local", "kuberay")]
    runs: list[Run] = []
    started = time.monotonic()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dj-kr-bench-") as tmp:
        cluster = Cluster(Path(tmp)).start()
        try:
            install_crd(cluster)
            namespace = cluster.create_namespace("bench")
            api = cluster.api_client()
            core = client.CoreV1Api(api)
            claim_root = prepare_claim(cluster, core, namespace, args)
            op = OperatorProcess(cluster, namespace, Path(tmp) / "operator.log").start()
            try:
                for rep in range(args.reps):
                    # Rotate the order each repetition: no configuration always runs first.
                    shift = rep % len(configs)
                    for config in configs[shift:] + configs[:shift]:
                        run = run_job(
                            cluster,
                            core,
                            namespace,
                            claim_root,
                            config,
                            rep,
                            args.partition_size,
                            args.job_timeout,
                        )
                        runs.append(run)
                        print(json.dumps(asdict(run)), flush=True)
            finally:
                op.stop()
                api.close()
        finally:
            cluster.stop()
    outputs = {r.output_sha256 for r in runs}
    result = {
        "rows": args.rows,
        "partition_size": args.partition_size,
        "reps": args.reps,
        "wall_s": round(time.monotonic() - started, 1),
        "cores": os.cpu_count(),
        "load_avg_1_5_15_start": [round(x, 2) for x in load_start],
        "load_avg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
        "identical_output": len(outputs) == 1,
        "output_sha256": sorted(outputs),
        "summary": summarise(runs, configs),
        "runs": [asdict(r) for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if len(outputs) != 1:
        print(f"error: the runs' outputs differ: {sorted(outputs)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
