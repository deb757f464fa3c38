"""Op-level agreement between dj-runner's ops and Data-Juicer's, on the same input texts.

When two engines keep different samples, this says which op differs. Each op of the recipe
is fed the same input on both sides (the raw texts run through dj-runner's preceding
mappers), and its result is compared: mapped texts for mappers, keep flags for filters, and
"first occurrence" flags for deduplicators. Data-Juicer's side runs in its own venv through
``bench/dj_ops_trace.py``.

    python bench/op_diff.py --recipe bench/recipes/bench.yaml --input data.text.jsonl \\
        --dj-venv DIR [--limit 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

BENCH_DIR = Path(__file__).resolve().parent


def _cut(t: Any, n: int = 160) -> str:
    s = repr(t)
    return s if len(s) <= n else s[:n] + "..."


def _first_flags(hashes: list[str]) -> list[bool]:
    seen: set[str] = set()
    flags = []
    for h in hashes:
        flags.append(h not in seen)
        seen.add(h)
    return flags


def ours(process: list[tuple[str, dict[str, Any]]], texts: list[str]) -> dict[str, Any]:
    """dj-runner's results per op, and the stage inputs each op reads."""
    from dj_runner.ops import get_op
    from dj_runner.ops.common.base import Deduplicator, Filter, Mapper

    stages: list[list[str]] = [list(texts)]
    op_stage: list[int] = []
    results: list[dict[str, Any]] = []
    cur = pa.array(texts, type=pa.string())
    for name, params in process:
        op = get_op(name)(**(params or {}))
        op_stage.append(len(stages) - 1)
        if isinstance(op, Mapper):
            cur = op.process(cur)
            mapped = cur.to_pylist()
            results.append({"kind": "mapper", "texts": mapped})
            stages.append(mapped)
        elif isinstance(op, Filter):
            stats = op.compute_stats(cur)
            keep = op.keep(stats).to_pylist()
            cols = {k: v.to_pylist() for k, v in stats.items()}
            per = [{k: cols[k][i] for k in cols} for i in range(len(keep))]
            results.append({"kind": "filter", "keep": keep, "stats": per})
        elif isinstance(op, Deduplicator):
            results.append({"kind": "deduplicator", "hashes": op.compute_hash(cur).to_pylist()})
        else:
            raise TypeError(name)
    return {"stages": stages, "op_stage": op_stage, "results": results}


def diff(
    process: list[tuple[str, dict[str, Any]]],
    mine: dict[str, Any],
    theirs: list[dict[str, Any]],
    examples: int = 3,
) -> list[dict[str, Any]]:
    rows = []
    for (name, _), a, b, stage in zip(
        process, mine["results"], theirs, mine["op_stage"], strict=True
    ):
        inputs = mine["stages"][stage]
        if a["kind"] == "mapper":
            bad = [i for i, (x, y) in enumerate(zip(a["texts"], b["texts"], strict=True)) if x != y]
            ex = [
                {
                    "input": _cut(inputs[i]),
                    "dj_runner": _cut(a["texts"][i]),
                    "data_juicer": _cut(b["texts"][i]),
                }
                for i in bad[:examples]
            ]
        elif a["kind"] == "filter":
            bad = [i for i, (x, y) in enumerate(zip(a["keep"], b["keep"], strict=True)) if x != y]
            ex = [
                {
                    "input": _cut(inputs[i]),
                    "dj_runner": f"keep={a['keep'][i]} {a['stats'][i]}",
                    "data_juicer": f"keep={b['keep'][i]} {b['stats'][i]}",
                }
                for i in bad[:examples]
            ]
        else:
            fa, fb = _first_flags(a["hashes"]), _first_flags(b["hashes"])
            bad = [i for i, (x, y) in enumerate(zip(fa, fb, strict=True)) if x != y]
            ex = [
                {
                    "input": _cut(inputs[i]),
                    "dj_runner": f"first={fa[i]}",
                    "data_juicer": f"first={fb[i]}",
                }
                for i in bad[:examples]
            ]
        rows.append({"op": name, "samples": len(inputs), "disagree": len(bad), "examples": ex})
    return rows


def run(recipe: dict[str, Any], input_path: Path, dj_venv: Path, limit: int) -> list[dict]:
    process = [
        (next(iter(e)), next(iter(e.values()))) if isinstance(e, dict) else (str(e), None)
        for e in recipe["process"]
    ]
    texts: list[str] = []
    with input_path.open(encoding="utf-8") as fh:
        for line in fh:
            if len(texts) >= limit:
                break
            texts.append(json.loads(line)["text"])
    mine = ours(process, texts)
    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(
            json.dumps({"ops": process, "stages": mine["stages"], "op_stage": mine["op_stage"]})
        )
        env = dict(os.environ)
        env.update(
            DATA_JUICER_CACHE_HOME=str(dj_venv / "dj-cache"),
            PIP_NO_INDEX="1",
            UV_OFFLINE="1",
            HF_HUB_OFFLINE="1",
        )
        subprocess.run(
            [
                str(dj_venv / "bin" / "python"),
                str(BENCH_DIR / "dj_ops_trace.py"),
                str(job),
                str(out),
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        theirs = json.loads(out.read_text())
    return diff(process, mine, theirs)


def main(argv: list[str] | None = None) -> int:
    import yaml

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", type=Path, default=BENCH_DIR / "recipes" / "bench.yaml")
    p.add_argument("--input", type=Path, required=True, help="JSONL with a text field")
    p.add_argument("--dj-venv", type=Path, required=True)
    p.add_argument("--limit", type=int, default=2000)
    a = p.parse_args(argv)
    rows = run(yaml.safe_load(a.recipe.read_text()), a.input, a.dj_venv, a.limit)
    json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
