"""A/B: two installs of dj-runner on the same recipe and data, runs interleaved, side by side.

For regression checks between versions of the runner (for example a release against the
working tree): each install is a venv with its own ``dj-runner``. Runs alternate A, B, A, B, ...
so that both meet the same machine noise; each run gets a fresh work dir and export. Prints the
medians, the ratio of medians and the median of the paired ratios, and checks that both
exported the same bytes.

    python bench/ab.py --a OLD_VENV --b .venv --data data.jsonl --reps 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from run_bench import compile_runner_bytecode

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_RECIPE = BENCH_DIR / "recipes" / "bench.yaml"


def run_once(venv: Path, recipe: dict, data: Path, root: Path, np_: int) -> tuple[float, str]:
    root.mkdir(parents=True)
    out = root / "out.jsonl"
    path = root / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {**recipe, "dataset_path": str(data), "export_path": str(out), "np": np_},
            sort_keys=False,
        )
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(venv / "bin" / "dj-runner"), "run", str(path), "--work-dir", str(root / "work")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{venv}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return wall, hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", type=Path, required=True, help="venv of install A (the baseline)")
    p.add_argument("--b", type=Path, required=True, help="venv of install B")
    p.add_argument("--data", type=Path, required=True, help="input JSONL (bench/generate.py)")
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--np", type=int, default=2)
    a = p.parse_args()
    recipe = yaml.safe_load(a.recipe.read_text())
    for venv in (a.a, a.b):
        compile_runner_bytecode(venv / "bin" / "python")
    walls: dict[str, list[float]] = {"a": [], "b": []}
    digests: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="dj-ab-") as tmp:
        for i in range(a.reps):
            for side, venv in (("a", a.a), ("b", a.b)):
                wall, digest = run_once(venv, recipe, a.data, Path(tmp) / f"{side}{i}", a.np)
                walls[side].append(wall)
                digests.add(digest)
                print(f"rep {i} {side}: {wall:.2f} s", file=sys.stderr)
    med_a, med_b = statistics.median(walls["a"]), statistics.median(walls["b"])
    paired = statistics.median(x / y for x, y in zip(walls["a"], walls["b"], strict=True))
    print(
        json.dumps(
            {
                "reps": a.reps,
                "a_wall_s": walls["a"],
                "b_wall_s": walls["b"],
                "median_a_s": round(med_a, 2),
                "median_b_s": round(med_b, 2),
                "b_speed_vs_a": round(med_a / med_b, 3),
                "paired_b_speed_vs_a": round(paired, 3),
                "same_output": len(digests) == 1,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
