"""Data-Juicer ops through the runner against Data-Juicer's default and ray_partitioned executors.

Runs in the environment that has the ``dj`` extra (``make install-dj``):

    .venv-dj/bin/python bench/dj_ops_bench.py -n 3000 --reps 3 [--data-dir DIR] [--out DIR]

1. Generates N samples with ``bench/generate.py`` (the same data for every engine; Data-Juicer
   reads the text-only copy, as in the main benchmark).
2. Runs one recipe of Data-Juicer ops on three engines, side by side, in interleaved
   repetitions whose order rotates (runner, dj_default, dj_ray; dj_default, dj_ray, runner;
   ...), so that load from other work on the machine falls on all three alike:

   - ``runner``: ``dj-runner run`` from this environment with ``op_implementation:
     data_juicer``, so every op is Data-Juicer's code, MinHash deduplication included
     (every_op Parquet checkpoints, event log on);
   - ``dj_default``: Data-Juicer 1.6.1 ``dj-process``, ``executor_type: default``;
   - ``dj_ray``: Data-Juicer 1.6.1 ``dj-process``, ``executor_type: ray_partitioned``,
     every_op checkpoints, ``ray_address: local``, its Ray temp dir private to the run. Its
     ray executors refuse ``document_minhash_deduplicator``; the recipe names Data-Juicer's
     ray counterpart ``ray_bts_minhash_deduplicator`` (same shingles, hash and permutations,
     union-find by Ray actors) for that engine only.

   Both Data-Juicer engines run in the venv of ``bench/dj_venv.sh``, offline, as in
   ``bench/run_bench.py``. Ray starts its workers at niceness 15; the runner's and dj_ray's
   workers get dj_default's niceness 0 here (``--ray-worker-niceness``), so that on a shared
   machine the engines, not their priorities, are compared. Reports medians, ratios (of the medians and paired within each
   repetition), the load average, and whether every engine kept the same multiset of texts
   as the runner; where it did not, how many texts differ and whether each differing text has
   a near-duplicate (the recipe's Jaccard threshold) on the other side, i.e. whether the
   engine kept another member of the same near-duplicate cluster.
3. Times the conversion between Arrow and Data-Juicer's batches per sample, both directions,
   on the generated samples with a stats column.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import generate  # noqa: E402
import run_bench  # noqa: E402

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
ENGINES = ("runner", "dj_default", "dj_ray")
#: Data-Juicer's ray executors refuse these ops ("does not support executor mode"); their
#: ray counterparts, given the same parameters.
DJ_RAY_OP_RENAMES = {"document_minhash_deduplicator": "ray_bts_minhash_deduplicator"}
#: The MinHash deduplicator's defaults on both sides (tokenization "space", lower-cased).
MINHASH_WINDOW, MINHASH_JACCARD = 5, 0.7
_RUNNER_JOB_TIME = re.compile(r"succeeded: \d+ -> \d+ samples in ([\d.]+)s")
_DJ_JOB_TIME = re.compile(r"Running executor took ([\d.]+) seconds")


# -- recipes and runs --------------------------------------------------------------------------


def engine_recipe(engine: str, data: Path, text_only: Path, run_dir: Path, np_: int) -> dict:
    """The recipe one engine runs; every engine exports to ``run_dir/out.jsonl``."""
    common = {"project_name": "dj-ops-bench", "export_path": str(run_dir / "out.jsonl"), "np": np_}
    if engine == "runner":
        return {
            **common,
            "dataset_path": str(data),
            "op_implementation": "data_juicer",
            "storage_format": "parquet",
            "checkpoint": {"enabled": True, "strategy": "every_op"},
            "process": PROCESS,
        }
    dj = {**common, "dataset_path": str(text_only), "work_dir": str(run_dir / "work")}
    if engine == "dj_default":
        return {**dj, "executor_type": "default", "process": PROCESS}
    if engine == "dj_ray":
        process = [{DJ_RAY_OP_RENAMES.get(k, k): v for k, v in e.items()} for e in PROCESS]
        return {
            **dj,
            "executor_type": "ray_partitioned",
            "ray_address": "local",
            # Data-Juicer writes its checkpoints as Parquet whatever the storage format.
            "checkpoint": {"enabled": True, "strategy": "every_op"},
            "process": process,
        }
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def run_engine(
    engine: str,
    rep: int,
    data: Path,
    text_only: Path,
    runs: Path,
    dj_venv: Path,
    np_: int,
    ray_worker_niceness: int | None,
) -> tuple[dict[str, Any], list[str] | None]:
    """One run of one engine: its figures, and its kept texts in export order."""
    run_dir = runs / f"{engine}-r{rep}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    recipe_path = run_dir / "recipe.yaml"
    recipe = engine_recipe(engine, data, text_only, run_dir, np_)
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    ray_tmp = None
    if engine == "runner":
        env = run_bench.base_env()
        cmd = [str(Path(sys.executable).parent / "dj-runner"), "run", str(recipe_path)]
        cmd += ["--work-dir", str(run_dir / "runner-work")]
    else:
        env = run_bench.dj_env(dj_venv, run_dir)
        # A private Ray temp root (never /tmp/ray), short enough for Ray's socket paths.
        ray_tmp = tempfile.mkdtemp(prefix="djb-")
        env.update(RAY_TMPDIR=ray_tmp, TMPDIR=ray_tmp)
        cmd = [str(dj_venv / "bin" / "dj-process"), "--config", str(recipe_path)]
    if ray_worker_niceness is not None and engine != "dj_default":
        # Ray starts its workers at niceness 15 unless told otherwise. On a machine shared with
        # other work that throttles the two Ray engines' ops against dj_default's processes
        # (niceness 0); the same niceness for all three compares the engines, not priorities.
        env["RAY_worker_niceness"] = str(ray_worker_niceness)
    load_before = os.getloadavg()[0]
    log_path = run_dir / "log.txt"
    try:
        rc, wall, mon, error = run_bench.run_command(cmd, env, log_path, 3600, run_dir)
    finally:
        if ray_tmp:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    log = log_path.read_text(errors="replace")
    if rc != 0 and error is None:
        error = f"exit code {rc}: " + " | ".join(log.strip().splitlines()[-3:])[-600:]
    m = (_RUNNER_JOB_TIME if engine == "runner" else _DJ_JOB_TIME).search(log)
    texts = run_bench.read_texts(run_dir / "out.jsonl") if error is None else None
    result = {
        "engine": engine,
        "rep": rep,
        "wall_s": round(wall, 2),
        "job_s": float(m.group(1)) if m else None,
        "cpu_s": round(sum(mon.cpu.values()), 1),
        "peak_rss_mb": round(mon.peak_rss / 2**20),
        "rows_out": len(texts) if texts is not None else None,
        "load_1m_before": round(load_before, 2),
        "error": error,
    }
    print(json.dumps(result), flush=True)
    if error is None:
        for p in (run_dir / "work", run_dir / "runner-work"):
            shutil.rmtree(p, ignore_errors=True)
    return result, texts


# -- same texts, and why not --------------------------------------------------------------------


def shingles(text: str, window: int = MINHASH_WINDOW) -> set[str]:
    """The MinHash deduplicator's shingles: lower-cased, split on whitespace, word n-grams."""
    words = text.lower().split()
    return {" ".join(words[i : i + window]) for i in range(max(1, len(words) - window + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def explain_difference(ref: list[str], other: list[str]) -> dict[str, Any]:
    """Texts kept by one side only, and how many of them have a near-duplicate kept on the other.

    A text kept only by one engine whose near-duplicate (exact Jaccard of the deduplicator's
    shingles >= its threshold) was kept only by the other means the two engines kept
    different members of the same near-duplicate cluster: the same decision up to which copy
    survives. Anything else is a different decision.
    """
    cr, co = Counter(ref), Counter(other)
    only_ref, only_other = list((cr - co).elements()), list((co - cr).elements())
    other_sh = [shingles(t) for t in only_other]
    paired_other: set[int] = set()
    swapped = 0
    best: list[float] = []
    for t in only_ref:
        sh = shingles(t)
        scores = [(jaccard(sh, o), j) for j, o in enumerate(other_sh) if j not in paired_other]
        score, j = max(scores, default=(0.0, -1))
        best.append(round(score, 3))
        if score >= MINHASH_JACCARD:
            swapped += 1
            paired_other.add(j)
    return {
        "only_in_runner": len(only_ref),
        "only_in_other": len(only_other),
        "other_member_of_same_cluster": swapped,
        "unexplained_only_in_runner": len(only_ref) - swapped,
        "unexplained_only_in_other": len(only_other) - swapped,
        "best_jaccard_of_each_only_in_runner": sorted(best),
    }


def compare_texts(ref: list[str], other: list[str]) -> dict[str, Any]:
    out = {
        "rows": len(other),
        "same_order": ref == other,
        "same_texts": Counter(ref) == Counter(other),
    }
    if not out["same_texts"]:
        out["difference"] = explain_difference(ref, other)
    return out


# -- conversion cost ----------------------------------------------------------------------------


def conversion_cost(data: Path, rows: int = 2048, reps: int = 5) -> dict[str, float]:
    import pyarrow as pa

    from dj_runner.dj_ops.convert import from_dj_batch, to_dj_batch
    from dj_runner.io.sources import records_to_table

    with open(data) as fh:
        records = [json.loads(line) for line, _ in zip(fh, range(rows), strict=False)]
    rows = len(records)
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


# -- summary ------------------------------------------------------------------------------------


def summarize(n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["error"] is None]
    walls = {e: [r["wall_s"] for r in ok if r["engine"] == e] for e in ENGINES}
    engines = {}
    for e in ENGINES:
        mine = [r for r in ok if r["engine"] == e]
        if not mine:
            continue
        jobs = [r["job_s"] for r in mine if r["job_s"] is not None]
        wall = statistics.median(walls[e])
        engines[e] = {
            "reps": len(mine),
            "wall_s": round(wall, 2),
            "wall_min_max_s": [min(walls[e]), max(walls[e])],
            "samples_per_s": round(n / wall, 1),
            "job_s": round(statistics.median(jobs), 2) if jobs else None,
            "cpu_s": round(statistics.median(r["cpu_s"] for r in mine), 1),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
            "rows_out": sorted({r["rows_out"] for r in mine}),
        }

    def paired(slow: str, fast: str) -> float | None:
        by_rep: dict[int, dict[str, float]] = {}
        for r in ok:
            by_rep.setdefault(r["rep"], {})[r["engine"]] = r["wall_s"]
        ratios = [d[slow] / d[fast] for d in by_rep.values() if slow in d and fast in d]
        return round(statistics.median(ratios), 2) if ratios else None

    ratios = {}
    for slow, fast in (("dj_default", "runner"), ("dj_ray", "runner"), ("dj_ray", "dj_default")):
        if slow in engines and fast in engines:
            ratios[f"{fast}_vs_{slow}"] = {
                "of_medians": round(engines[slow]["wall_s"] / engines[fast]["wall_s"], 2),
                "paired": paired(slow, fast),
                "of_cpu_s": round(engines[slow]["cpu_s"] / engines[fast]["cpu_s"], 2),
            }
    return {"engines": engines, "speedup": ratios}


def markdown(result: dict[str, Any]) -> str:
    """The engines table for docs/benchmarks.md."""
    s = result["summary"]
    same = result["same_texts_as_runner"]
    lines = [
        "| engine | reps | wall s (median; min-max) | samples/s | job s | CPU s "
        "| samples out | same texts as the runner |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for e, v in s["engines"].items():
        lo, hi = v["wall_min_max_s"]
        rows = ", ".join(f"{x:,}" for x in v["rows_out"])
        verdict = "(reference)" if e == "runner" else ("yes" if same[e]["same_texts"] else "no")
        job = f"{v['job_s']:.1f}" if v["job_s"] is not None else "n/a"
        lines.append(
            f"| `{e}` | {v['reps']} | {v['wall_s']:.1f} ({lo:.1f}-{hi:.1f}) "
            f"| {v['samples_per_s']:.1f} | {job} | {v['cpu_s']:.1f} | {rows} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=3000, help="samples to generate (default 3000)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each engine (default 3)")
    p.add_argument("--data-dir", type=Path, default=generate.DEFAULT_DATA_DIR)
    p.add_argument("--out", type=Path, default=BENCH / "results" / "dj-ops")
    p.add_argument("--np", type=int, default=os.cpu_count() or 1)
    p.add_argument("--dj-venv", type=Path, help="Data-Juicer venv (default: dj_venv.sh's)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    p.add_argument(
        "--ray-worker-niceness",
        type=int,
        default=0,
        help="niceness of the Ray workers of runner and dj_ray (default 0, as dj_default's "
        "processes; -1: Ray's own default, 15)",
    )
    args = p.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or "runner" not in engines:
        p.error(f"--engines: {bad or engines} invalid; choose from {ENGINES}, runner included")
    niceness = None if args.ray_worker_niceness == -1 else args.ray_worker_niceness
    if niceness is not None and not 0 <= niceness <= 19:
        p.error(f"--ray-worker-niceness must be -1 or 0..19, got {args.ray_worker_niceness}")
    if args.reps < 1 or args.n < 1:
        p.error(f"-n and --reps must be >= 1, got -n {args.n} --reps {args.reps}")

    started = time.time()
    load_start = os.getloadavg()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_bench.ensure_bench_requirements()
    print("preparing the Data-Juicer venv...", file=sys.stderr, flush=True)
    dj_venv = run_bench.ensure_dj_venv(args.dj_venv)
    data, text_only = out / "data.jsonl", out / "data.text.jsonl"
    manifest = generate.generate(args.data_dir, args.n, data, seed=0, text_only_out=text_only)

    runs: list[dict[str, Any]] = []
    kept: dict[str, list[str]] = {}
    for rep in range(args.reps):
        order = engines[rep % len(engines) :] + engines[: rep % len(engines)]
        for engine in order:
            result, texts = run_engine(
                engine, rep, data, text_only, out / "runs", dj_venv, args.np, niceness
            )
            runs.append(result)
            if texts is not None:
                kept.setdefault(engine, texts)
    load_end = os.getloadavg()

    same = {}
    if "runner" in kept:
        for e in engines[1:]:
            if e in kept:
                same[e] = compare_texts(kept["runner"], kept[e])
        if "dj_default" in kept and "dj_ray" in kept:
            same["dj_ray_vs_dj_default"] = compare_texts(kept["dj_default"], kept["dj_ray"])
    result = {
        "samples": args.n,
        "mean_chars": round(manifest["mean_chars"]),
        "input_sha256": manifest.get("sha256"),
        "np": args.np,
        "reps": args.reps,
        "ray_worker_niceness": 15 if niceness is None else niceness,
        "ops": [next(iter(e)) for e in PROCESS],
        "dj_ray_op_renames": DJ_RAY_OP_RENAMES,
        "minutes": round((time.time() - started) / 60, 1),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "runs": runs,
        "summary": summarize(args.n, runs),
        "same_texts_as_runner": same,
        "conversion": conversion_cost(data),
    }
    result["markdown"] = markdown(result)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    print(result["markdown"])


if __name__ == "__main__":
    main()
