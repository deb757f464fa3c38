"""Storage formats: every checkpoint format and compression, through the runner's own writer.

The bench data (``bench/generate.py``, the whole JSONL read into one Arrow table) is written as
one checkpoint and read back by ``store/checkpoint.py``'s ``CheckpointDir`` (``save``: write,
checksum, commit; ``load``: verify the checksum, read, restore the types), for each format of
``COMPRESSIONS`` with each of its compressions. Per combination:

- ratio: the input JSONL's bytes over the checkpoint's bytes;
- write and read speed: the input JSONL's MB per second of ``save`` and of ``load`` (medians
  of ``--reps`` repetitions; the file is in the page cache, as a just-written checkpoint is);
- memory: the growth of the process's peak RSS over its RSS just before the first ``save``
  (the table already in memory) or the first ``load`` (``/proc/self/clear_refs`` resets the
  peak), each measured in a fresh process.

    python bench/formats_bench.py            # 10,000 samples, 5 repetitions
    python bench/formats_bench.py -n 2000 --reps 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import generate  # noqa: E402
import report  # noqa: E402
from recovery_bench import machine  # noqa: E402
from run_bench import DEFAULT_DATA_DIR, DEFAULT_RESULTS  # noqa: E402

MB = 1024 * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """Reset the peak RSS to the current RSS (Linux); return the current RSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def _peak_growth_mb(rss0_kb: int) -> float:
    return (_status_kb("VmHWM") - rss0_kb) / 1024


def measure_one(data: Path, fmt: str, compression: str, phase: str, reps: int) -> dict[str, Any]:
    """In this process: the first ``phase`` (write or read) for memory, then ``reps`` timed."""
    import pyarrow as pa
    import pyarrow.json as pj

    from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey

    table = pj.read_json(str(data))
    key = CheckpointKey(1)
    times: list[float] = []
    mem = 0.0
    with tempfile.TemporaryDirectory(prefix="dj-formats-") as tmp:
        store = CheckpointDir(Path(tmp) / "p00000", fmt, compression)
        if phase == "write":
            rss0 = _reset_peak()
            for _ in range(reps):
                t0 = time.perf_counter()
                commit = store.save(key, table, "bench")
                times.append(time.perf_counter() - t0)
                if len(times) == 1:
                    mem = _peak_growth_mb(rss0)
        else:
            commit = store.save(key, table, "bench")
            del table
            gc.collect()
            pa.default_memory_pool().release_unused()
            rss0 = _reset_peak()
            for _ in range(reps):
                t0 = time.perf_counter()
                back = store.load(commit)
                times.append(time.perf_counter() - t0)
                if len(times) == 1:
                    mem = _peak_growth_mb(rss0)
                del back
    return {"seconds": statistics.median(times), "peak_growth_mb": mem, "bytes": commit.bytes}


def measure(data: Path, reps: int, echo: bool = True) -> dict[str, Any]:
    """Every format and compression on the JSONL ``data``: the rows of the table, and the load."""
    from dj_runner.recipe.keys import COMPRESSIONS, DEFAULT_COMPRESSION

    load_start = os.getloadavg()
    in_mb = data.stat().st_size / MB
    rows: list[dict[str, Any]] = []
    for fmt, comps in COMPRESSIONS.items():
        for comp in comps:
            w = run_child(data, fmt, comp, "write", reps)
            r = run_child(data, fmt, comp, "read", reps)
            row = {
                "format": fmt,
                "compression": comp,
                "default": DEFAULT_COMPRESSION[fmt] == comp,
                "file_mb": round(w["bytes"] / MB, 2),
                "ratio": round(in_mb * MB / w["bytes"], 2),
                "write_mb_s": round(in_mb / w["seconds"], 1),
                "read_mb_s": round(in_mb / r["seconds"], 1),
                "write_peak_mb": round(w["peak_growth_mb"], 1),
                "read_peak_mb": round(r["peak_growth_mb"], 1),
            }
            rows.append(row)
            if echo:
                print(json.dumps(row), flush=True)
    return {
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "input_mb": round(in_mb, 2),
        "reps": reps,
        "rows": rows,
    }


def run_child(data: Path, fmt: str, comp: str, phase: str, reps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(data), fmt, comp, phase, str(reps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        data, fmt, comp, phase, reps = sys.argv[2:7]
        print(json.dumps(measure_one(Path(data), fmt, comp, phase, int(reps))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--num-samples", type=int, default=10000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dj-formats-") as tmp:
        data = Path(tmp) / "data.jsonl"
        generate.generate(a.data_dir, a.num_samples, data, seed=0)
        summary = {"machine": machine(), "samples": a.num_samples, **measure(data, a.reps)}
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / f"formats-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(report.formats_table(summary))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
