"""Data-Juicer ops through the runner against Data-Juicer's own default executor.

Runs in the environment that has the ``dj`` extra (``make install-dj``):

    .venv-dj/bin/python bench/dj_ops_bench.py -n 5000 [--data-dir DIR] [--out bench/results/dj-ops]

1. Generates N samples with ``bench/generate.py`` (the same data for every engine; Data-Juicer
   reads the text-only copy, as in the main benchmark).
2. Runs one recipe of Data-Juicer ops (``op_implementation: data_juicer``, so every op is
   Data-Juicer's code, MinHash deduplication included) with ``dj-runner run`` (every_op Parquet
   checkpoints, events on) and with Data-Juicer 1.6.1's default executor (``np`` = CPUs), and
   checks that both keep the same multiset of texts.
3. Times the conversion between Arrow and Data-Juicer's batches per sample, both directions,
   on the generated samples with a stats column.

Data-Juicer's default executor runs in a child process of this script rather than through
``dj-process``: it calls ``torch.cuda.empty_cache()`` after each op, and with torch absent its
lazy loader would pip-install torch; that one call is made a no-op (no op here uses torch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

PROCESS = [
    {"whitespace_normalization_mapper": {}},
    {"punctuation_normalization_mapper": {}},
    {"remove_long_words_mapper": {"min_len": 1, "max_len": 30}},
    {"remove_table_text_mapper": {}},
    {"text_length_filter": {"min_len": 50, "max_len": 100000}},
    {"words_num_filter": {"min_num": 10}},
    {"alphanumeric_filter": {"min_ratio": 0.4}},
    {"character_repetition_filter": {"rep_len": 10, "max_ratio": 0.5}},
    {"special_characters_filter": {"max_ratio": 0.4}},
    {"document_minhash_deduplicator": {}},
]


def dj_child(recipe_path: str) -> None:
    from data_juicer.utils import model_utils

    model_utils.torch = types.SimpleNamespace(
        cuda=types.SimpleNamespace(empty_cache=lambda: None, is_available=lambda: False)
    )
    from data_juicer.config import init_configs
    from data_juicer.core import DefaultExecutor

    DefaultExecutor(init_configs(args=["--config", recipe_path])).run()


def timed(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}); see {log}")
    return wall


def texts(path: Path) -> Counter[str]:
    with open(path) as fh:
        return Counter(json.loads(line)["text"] for line in fh if line.strip())


def conversion_cost(data: Path, rows: int = 2048, reps: int = 5) -> dict[str, float]:
    import pyarrow as pa

    from dj_runner.dj_ops.convert import from_dj_batch, to_dj_batch
    from dj_runner.sources import records_to_table

    with open(data) as fh:
        records = [json.loads(next(fh)) for _ in range(rows)]
    table = records_to_table(records, ("text",))
    stats = pa.StructArray.from_arrays(
        [pa.array([len(r["text"]) for r in records]), pa.array([0.5] * rows)],
        names=["text_len", "alnum_ratio"],
    )
    table = table.append_column("__dj__stats__", stats)
    to_s, back_s = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        batch = to_dj_batch(table)
        t1 = time.perf_counter()
        from_dj_batch(batch, table.schema)
        t2 = time.perf_counter()
        to_s.append(t1 - t0)
        back_s.append(t2 - t1)
    mb = table.nbytes / 2**20
    return {
        "rows": rows,
        "table_mb": round(mb, 2),
        "arrow_to_dj_us_per_sample": round(min(to_s) / rows * 1e6, 2),
        "dj_to_arrow_us_per_sample": round(min(back_s) / rows * 1e6, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=BENCH / "results" / "dj-ops")
    p.add_argument("--np", type=int, default=os.cpu_count() or 1)
    p.add_argument("--dj-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dj_child:
        dj_child(args.dj_child)
        return

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data, text_only = out / "data.jsonl", out / "data.text.jsonl"
    gen = [sys.executable, str(BENCH / "generate.py"), "-n", str(args.n), "--out", str(data)]
    gen += ["--text-only-out", str(text_only)]
    if args.data_dir:
        gen += ["--data-dir", str(args.data_dir)]
    subprocess.run(gen, check=True)

    runner_recipe = out / "runner.yaml"
    runner_recipe.write_text(
        yaml.safe_dump(
            {
                "project_name": "dj-ops-bench",
                "dataset_path": str(data),
                "export_path": str(out / "runner-out.jsonl"),
                "np": args.np,
                "op_implementation": "data_juicer",
                "storage_format": "parquet",
                "checkpoint": {"enabled": True, "strategy": "every_op"},
                "process": PROCESS,
            },
            sort_keys=False,
        )
    )
    dj_recipe = out / "dj-default.yaml"
    dj_recipe.write_text(
        yaml.safe_dump(
            {
                "project_name": "dj-ops-bench",
                "dataset_path": str(text_only),
                "export_path": str(out / "dj-out.jsonl"),
                "executor_type": "default",
                "np": args.np,
                "work_dir": str(out / "dj-work"),
                "process": PROCESS,
            },
            sort_keys=False,
        )
    )
    bin_dir = Path(sys.executable).parent
    work = out / "runner-work"
    subprocess.run(["rm", "-rf", str(work), str(out / "dj-work")], check=True)
    runner_s = timed(
        [str(bin_dir / "dj-runner"), "run", str(runner_recipe), "--work-dir", str(work)],
        out / "runner.log",
    )
    dj_s = timed([sys.executable, __file__, "--dj-child", str(dj_recipe)], out / "dj-default.log")
    ours, theirs = texts(out / "runner-out.jsonl"), texts(out / "dj-out.jsonl")
    result = {
        "samples": args.n,
        "np": args.np,
        "ops": [next(iter(e)) for e in PROCESS],
        "runner_wall_s": round(runner_s, 2),
        "dj_default_wall_s": round(dj_s, 2),
        "runner_samples_per_s": round(args.n / runner_s, 1),
        "dj_default_samples_per_s": round(args.n / dj_s, 1),
        "rows_out_runner": sum(ours.values()),
        "rows_out_dj_default": sum(theirs.values()),
        "same_texts": ours == theirs,
        "conversion": conversion_cost(data),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
