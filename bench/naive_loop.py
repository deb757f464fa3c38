"""A naive single-process baseline: the recipe's ops from dj_runner's registry, in one plain loop.

No Ray, no partitions, no checkpoints, no event log: read the JSONL input with ``json``, cut it
into batches, run every op of the recipe over each batch in order (mappers rewrite the text,
filters compute stats and drop samples, the deduplicator keeps the first sample of each hash
across the whole input), and write the kept records, in input order, as JSONL.

    python bench/naive_loop.py RECIPE.yaml --input data.jsonl --output kept.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from dj_runner.ops import get_op
from dj_runner.ops.common.base import Deduplicator, Filter, Mapper, Op


def load_ops(process: list[Any]) -> list[Op]:
    """Instantiate each ``{op_name: params}`` entry of a Data-Juicer ``process`` list."""
    ops: list[Op] = []
    for entry in process:
        (name, params), *_ = (entry if isinstance(entry, dict) else {entry: None}).items()
        ops.append(get_op(name)(**(params or {})))
    return ops


def read_batches(paths: list[Path], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for path in paths:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                batch.append(json.loads(line))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
    if batch:
        yield batch


def run(
    ops: list[Op],
    inputs: list[Path],
    output: Path,
    text_key: str = "text",
    batch_size: int = 1000,
    op_seconds: list[float] | None = None,
    op_samples: list[int] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, int]:
    """Apply ``ops`` to every record of ``inputs``; return (samples in, samples out).

    With ``op_seconds`` (one slot per op), each op's time by ``clock`` is added to its slot;
    with ``op_samples``, the number of samples each op was given.
    """
    seen: set[str] = set()
    n_in = n_out = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as out:
        for records in read_batches(inputs, batch_size):
            n_in += len(records)
            texts = pa.array([r.get(text_key) for r in records], type=pa.string())
            for k, op in enumerate(ops):
                if not records:
                    break
                if op_samples is not None:
                    op_samples[k] += len(records)
                t0 = clock()
                if isinstance(op, Mapper):
                    texts = op.process(texts)
                    if op_seconds is not None:
                        op_seconds[k] += clock() - t0
                    continue
                if isinstance(op, Filter):
                    mask = op.keep(op.compute_stats(texts)).to_pylist()
                elif isinstance(op, Deduplicator):
                    mask = []
                    for h in op.compute_hash(texts).to_pylist():
                        mask.append(h not in seen)
                        seen.add(h)
                else:
                    raise TypeError(
                        f"{type(op).__name__} is neither Mapper, Filter nor Deduplicator"
                    )
                records = [r for r, m in zip(records, mask, strict=True) if m]
                texts = pc.filter(texts, pa.array(mask, type=pa.bool_()))
                if op_seconds is not None:
                    op_seconds[k] += clock() - t0
            for rec, text in zip(records, texts.to_pylist(), strict=True):
                rec[text_key] = text
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n_out += len(records)
    return n_in, n_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", type=Path)
    p.add_argument("--input", type=Path, action="append", help="JSONL file (repeatable)")
    p.add_argument("--output", type=Path, help="output JSONL (default: the recipe's export_path)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--profile", action="store_true", help="print each op's share of the time")
    a = p.parse_args(argv)
    recipe = yaml.safe_load(a.recipe.read_text())
    inputs = a.input or [Path(recipe["dataset_path"])]
    output = a.output or Path(recipe["export_path"])
    text_keys = recipe.get("text_keys", "text")
    text_key = text_keys if isinstance(text_keys, str) else text_keys[0]
    ops = load_ops(recipe["process"])
    op_seconds = [0.0] * len(ops) if a.profile else None
    t0 = time.perf_counter()
    n_in, n_out = run(ops, inputs, output, text_key, a.batch_size, op_seconds)
    dt = time.perf_counter() - t0
    print(f"naive loop: {n_in} -> {n_out} samples in {dt:.2f}s", file=sys.stderr)
    if op_seconds is not None:
        for op, sec in sorted(zip(ops, op_seconds, strict=True), key=lambda x: -x[1]):
            print(f"  {op.name:36s} {sec:7.2f}s {sec / dt:6.1%}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
