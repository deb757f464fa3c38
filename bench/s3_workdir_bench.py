"""The work dir in object storage against the work dir on local disk: throughput, requests, resume.

Starts the test S3 server (SeaweedFS ``weed mini``, from the ``test`` extra) on free loopback
ports, generates a corpus, and runs the same job (``dj-runner run``, checkpoint after every op)
with its work dir on local disk and in the bucket, alternately, ``--reps`` times each; the input
and the export stay local in both, so the difference is the work dir alone. Each run's CPU
seconds are taken too: the runner's (its driver, fork server and worker processes, every one
reaped by this script, which makes itself their subreaper) and the S3 server's (from its
``/proc`` entry), since on one machine the server's CPU is taken from the runner's cores. Then:

- one more S3 run through a counting proxy (``tests/harness/s3faults.py``, no faults): the
  requests by kind (PUT, GET, HEAD, LIST, DELETE), per partition, and their price per TB of
  input at public AWS S3 Standard prices;
- the time from a SIGKILL of a runner to the first new commit record of the resumed run, with
  the default lease ttl and with a 3 s one.

    python bench/s3_workdir_bench.py [--docs 20000] [--partition-size 1000] [--reps 3] [--no-extras]

Prints a JSON report; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.s3faults import FaultProxy  # noqa: E402
from tests.harness.s3server import S3Server, start_s3_server  # noqa: E402

#: AWS S3 Standard request prices (us-east-1, per 1,000 requests), December 2026.
PRICE_PER_1000 = {"PUT": 0.005, "LIST": 0.005, "GET": 0.0004, "HEAD": 0.0004, "DELETE": 0.0}
OPS = [
    {"whitespace_normalization_mapper": {}},
    {"clean_links_mapper": {}},
    {"text_length_filter": {"min_len": 10, "max_len": 100000}},
    {"words_num_filter": {"min_num": 3}},
    {"document_deduplicator": {"lowercase": True}},
]


def corpus(path: Path, docs: int) -> int:
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(5000)]
    with open(path, "w") as fh:
        for i in range(docs):
            words = " ".join(rng.choice(vocab) for _ in range(rng.randint(20, 400)))
            fh.write(json.dumps({"text": f"doc {i} {words} http://x.example/{i}"}) + "\n")
    return path.stat().st_size


def recipe(tmp: Path, name: str, data: Path, partition_size: int) -> Path:
    path = tmp / f"{name}.yaml"
    body = {
        "project_name": name,
        "dataset_path": str(data),
        "export_path": str(tmp / f"{name}.jsonl"),
        "partition_size": partition_size,
        "np": 2,
        "checkpoint": {"enabled": True, "strategy": "every_op"},
        "process": OPS,
    }
    path.write_text(yaml.safe_dump(body))
    return path


def become_subreaper() -> None:
    """Adopt the runner's orphaned processes (its fork server and workers outlive their parent
    by a moment), so that reaping them counts their CPU in ``RUSAGE_CHILDREN`` (Linux)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_orphans(keep: set[int], timeout: float = 60.0) -> None:
    """Wait for every child of this process but ``keep`` (the server) to end, and reap it."""
    deadline = time.monotonic() + timeout
    me = str(os.getpid())
    while time.monotonic() < deadline:
        kids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me and int(pid) not in keep:
                kids.append(int(pid))
        if not kids:
            return
        for pid in kids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def cpu_seconds(pid: int) -> float:
    """A running process's CPU seconds (user and system) from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(path: Path, work: str, env: dict[str, str], server_pid: int) -> tuple[float, float, float]:
    """One job: its wall seconds, the runner's CPU seconds and the server's meanwhile."""
    server_before = cpu_seconds(server_pid)
    cpu_before = children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dj_runner.cli", "run", str(path), "--work-dir", work],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=1800,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    reap_orphans({server_pid})
    server = cpu_seconds(server_pid) - server_before
    return wall, children_cpu() - cpu_before, server


def kind(method: str, path: str) -> str:
    if method == "GET" and ("list-type=" in path or "?prefix=" in path or "&prefix=" in path):
        return "LIST"
    return method


def commit_records(server: S3Server, bucket: str, prefix: str) -> int:
    from pyarrow.fs import FileSelector

    infos = server.filesystem().get_file_info(
        FileSelector(f"{bucket}/{prefix}/checkpoints", recursive=True, allow_not_found=True)
    )
    return sum(1 for i in infos if "/commits.jsonl/" in i.path)


def kill_to_commit(
    server: S3Server, bucket: str, path: Path, prefix: str, env: dict[str, str]
) -> float:
    """Seconds from a runner's SIGKILL to the resumed run's first new commit record."""
    work = f"s3://{bucket}/{prefix}"
    argv = [sys.executable, "-m", "dj_runner.cli", "run", str(path), "--work-dir", work]
    full_env = {**os.environ, **env}
    first = subprocess.Popen(
        argv,
        env=full_env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while commit_records(server, bucket, prefix) < 10:
        if first.poll() is not None:
            raise SystemExit("the run ended before it could be killed")
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    killed = time.perf_counter()
    first.wait()
    before = commit_records(server, bucket, prefix)
    second = subprocess.Popen(
        argv, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while commit_records(server, bucket, prefix) <= before:
            if second.poll() is not None:
                break
            time.sleep(0.05)
        return time.perf_counter() - killed
    finally:
        second.wait(timeout=1800)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--partition-size", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also time the bucket run with the runner of another checkout of this project "
        "(its runner/ directory first on PYTHONPATH), interleaved with the others: 's3-baseline'",
    )
    ap.add_argument(
        "--no-extras",
        action="store_true",
        help="only the timed runs: no counted run, no kill-to-resume timings",
    )
    args = ap.parse_args()
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="dj-s3-bench-") as tmpdir:
        tmp = Path(tmpdir)
        server = start_s3_server(tmp / "server")
        try:
            bucket = server.create_bucket("dj-bench")
            data = tmp / "data.jsonl"
            size = corpus(data, args.docs)
            env = {**server.env(), "DJ_RUNNER_ENGINE": "local"}
            assert server.component.proc is not None
            server_pid = server.component.proc.pid
            kinds = ["local", "s3", *(["s3-baseline"] if args.baseline else [])]
            times: dict[str, list[float]] = {k: [] for k in kinds}
            runner_cpu: dict[str, list[float]] = {k: [] for k in kinds}
            server_cpu: dict[str, list[float]] = {k: [] for k in kinds}
            load = [os.getloadavg()[0]]
            for rep in range(args.reps):
                for where in kinds:
                    path = recipe(tmp, f"{where}{rep}", data, args.partition_size)
                    work = (
                        str(tmp / f"w-{rep}")
                        if where == "local"
                        else f"s3://{bucket}/work/{where}-{rep}"
                    )
                    run_env = env
                    if where == "s3-baseline":
                        older = str(Path(args.baseline).resolve() / "runner")
                        paths = [older, os.environ.get("PYTHONPATH", "")]
                        run_env = env | {"PYTHONPATH": os.pathsep.join(filter(None, paths))}
                    wall, cpu, served = run(path, work, run_env, server_pid)
                    times[where].append(wall)
                    runner_cpu[where].append(cpu)
                    server_cpu[where].append(served)
                    load.append(os.getloadavg()[0])
            counts: Counter[str] = Counter()
            resume: dict[str, float] = {}
            if not args.no_extras:
                with FaultProxy(server.endpoint) as proxy:
                    path = recipe(tmp, "counted", data, args.partition_size)
                    run(
                        path,
                        f"s3://{bucket}/work/counted",
                        server.env(endpoint=proxy.endpoint) | {"DJ_RUNNER_ENGINE": "local"},
                        server_pid,
                    )
                    counts = Counter(kind(m, p) for m, p, _ in proxy.log)
                path = recipe(tmp, "kill", data, args.partition_size)
                resume["ttl_15s"] = kill_to_commit(server, bucket, path, "work/kill15", env)
                resume["ttl_3s"] = kill_to_commit(
                    server, bucket, path, "work/kill3", env | {"DJ_RUNNER_S3_LEASE_TTL_S": "3"}
                )
        finally:
            server.stop()
    partitions = -(-args.docs // args.partition_size)
    per_tb = size and 1e12 / size
    cost = sum(PRICE_PER_1000.get(k, 0.0) * n / 1000 for k, n in counts.items())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "docs": args.docs,
                "input_bytes": size,
                "partitions": partitions,
                "ops": len(OPS),
                "load_average_1m": {"min": min(load), "max": max(load)},
                "seconds": times,
                "median_seconds": med,
                "s3_over_local_time": med["s3"] / med["local"],
                "throughput_ratio_s3_vs_local": med["local"] / med["s3"],
                **(
                    {"throughput_ratio_s3_baseline_vs_local": med["local"] / med["s3-baseline"]}
                    if args.baseline
                    else {}
                ),
                "runner_cpu_seconds": runner_cpu,
                "median_runner_cpu_seconds": {
                    k: statistics.median(v) for k, v in runner_cpu.items()
                },
                "median_server_cpu_seconds": {
                    k: statistics.median(v) for k, v in server_cpu.items()
                },
                "requests": dict(counts),
                "requests_per_partition": {k: n / partitions for k, n in counts.items()},
                "request_cost_usd_per_run": cost,
                "request_cost_usd_per_tb_input_at_this_partition_size": cost * per_tb,
                "kill_to_first_new_commit_s": resume,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
