"""The driver's per-partition work dir traffic with the work dir in a bucket, timed.

``bench/scale_sim.py`` finds two costs of the driver that grow with the partitions and that a
bucket turns into requests: the scan of every partition's commit log when a job starts or
resumes and before each stage (``CheckpointDir.newest_key``), and the ``status.json`` write
for every partition settled. This times both against the test S3 server (``weed mini`` on
loopback, from the ``test`` extra): a lower bound, since a real store's requests take longer.

- seed: P partitions with 16 commit records each (the bench recipe's every_op checkpoints);
- scan, cold: a fresh process reads every partition's newest key, as a resumed driver does
  first (one listing and one read per record);
- scan, warm: the same process again, as before each stage (one listing each; the records are
  cached);
- status: ``StatusWriter.write`` to the bucket, 200 times.

    python bench/scale_bucket.py --partitions 200
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMITS_PER_PARTITION = 16


def _store(work: str, pid: int) -> Any:
    from dj_runner.store.checkpoint import CheckpointDir
    from dj_runner.store.workdir import WorkDir

    w = WorkDir(work)
    return CheckpointDir(w.show(w.checkpoint_key(pid)), "parquet", "snappy")


def seed(work: str, partitions: int) -> None:
    """Write the commit records (not the checkpoint files: the scan reads only the logs)."""
    from dj_runner.store.checkpoint import COMMITS, CheckpointKey, Commit

    def one(pid: int) -> None:
        store = _store(work, pid)
        for step in range(1, COMMITS_PER_PARTITION + 1):
            key = CheckpointKey(step)
            commit = Commit(
                key,
                f"{key.label}.parquet",
                10000,
                1 << 20,
                "0" * 64,
                "parquet",
                "snappy",
                "op",
                None,
            )
            store.blobs.append(COMMITS, commit.to_record())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(partitions)))


def scan(work: str, partitions: int) -> dict[str, float]:
    """In this (fresh) process: the cold scan, then the warm one; seconds each."""
    out = {}
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        keys = [_store(work, pid).newest_key() for pid in range(partitions)]
        out[label] = time.perf_counter() - t0
        if any(k is None or k.step != COMMITS_PER_PARTITION for k in keys):
            raise RuntimeError("a partition's newest key is not its last commit")
    return out


def status_writes(work: str, n: int) -> list[float]:
    from dj_runner.observe.status_file import StatusWriter

    writer = StatusWriter(work, "bench", "run", None)
    times = []
    for k in range(n):
        t0 = time.perf_counter()
        writer.update(partitions={"done": k})
        times.append(time.perf_counter() - t0)
    return times


def measure(partitions: int, writes_n: int) -> dict[str, Any]:
    """On a fresh test S3 server: a work dir of ``partitions`` partitions scanned cold and warm,
    and ``writes_n`` writes of ``status.json``."""
    from tests.harness.s3server import start_s3_server

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dj-scale-bucket-") as tmp:
        server = start_s3_server(Path(tmp) / "server")
        try:
            bucket = server.create_bucket("dj-scale")
            env = {**os.environ, **server.env()}
            work = f"s3://{bucket}/work"

            def child(*args: str) -> Any:
                cmd = [sys.executable, __file__, "--child", *args]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                return json.loads(out.stdout)

            child("seed", work, str(partitions))
            scans = child("scan", work, str(partitions))
            writes = child("status", f"s3://{bucket}/status", str(writes_n))
        finally:
            server.stop()
    return {
        "partitions": partitions,
        "commits_per_partition": COMMITS_PER_PARTITION,
        "scan_cold_ms_per_partition": round(1000 * scans["cold"] / partitions, 2),
        "scan_warm_ms_per_partition": round(1000 * scans["warm"] / partitions, 2),
        "status_write_ms_median": round(1000 * statistics.median(writes), 2),
        "status_write_ms_p90": round(1000 * statistics.quantiles(writes, n=10)[-1], 2),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        cmd, work, n = sys.argv[2:5]
        if cmd == "seed":
            seed(work, int(n))
            print("{}")
        elif cmd == "scan":
            print(json.dumps(scan(work, int(n))))
        else:
            print(json.dumps(status_writes(work, int(n))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--partitions", type=int, default=200)
    p.add_argument("--status-writes", type=int, default=200)
    a = p.parse_args(argv)
    summary = measure(a.partitions, a.status_writes)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
