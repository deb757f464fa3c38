"""Fixtures for the Data-Juicer op tests: they need the ``dj`` extra, and skip without it.

Each test module skips itself without the extra (``needs_dj``). The corpus is committed in ``tests/data/dj`` (Data-Juicer's demo data, Apache-2.0, with its
LICENSE). ``dj_reference`` runs Data-Juicer's own default executor in a subprocess.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
NEEDS_DJ = "needs the dj extra: pip install -e '.[testtools,dj]' (make install-dj)"
CORPUS = HERE.parent / "data" / "dj" / "corpus.jsonl"
EDGE_CASES = HERE.parent / "data" / "dj" / "edge-cases.jsonl"


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One embedded Ray for the in-process tests of this session."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def text_only_copy(src: Path, dst: Path) -> Path:
    """The corpus with only its text field (Data-Juicer's loader wants one schema per file)."""
    rows = read_jsonl(src)
    dst.write_text(
        "".join(json.dumps({"text": r["text"]}, ensure_ascii=False) + "\n" for r in rows)
    )
    return dst


def dj_reference(dataset: Path, cases: dict[str, list[Any]], out_dir: Path) -> dict[str, list[str]]:
    """Each case's output texts from Data-Juicer's default executor."""
    spec = out_dir / "cases.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"dataset": str(dataset), "out_dir": str(out_dir), "cases": cases}))
    proc = subprocess.run(
        [sys.executable, str(HERE / "dj_reference.py"), str(spec)],
        capture_output=True,
        text=True,
        # Data-Juicer's worker processes log long lines to one shared pipe, and their writes
        # can interleave inside a multi-byte character (seen once: 30 tests erred decoding
        # stderr); it is read only for the failure message.
        errors="replace",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {case: [r["text"] for r in read_jsonl(out_dir / f"{case}.jsonl")] for case in cases}


def dj_reference_stats(out_dir: Path, case: str) -> dict[str, dict[str, Any]]:
    """The stats of each text a filter case kept, from Data-Juicer's stats file (one line per
    exported sample, in the same order)."""
    texts = [r["text"] for r in read_jsonl(out_dir / f"{case}.jsonl")]
    stats = [r["__dj__stats__"] for r in read_jsonl(out_dir / f"{case}_stats.jsonl")]
    assert len(texts) == len(stats)
    return dict(zip(texts, stats, strict=True))


def assert_same_stats(ours: dict[str, Any], theirs: dict[str, Any], text: str) -> None:
    """Same keys, same values. Data-Juicer's exporter writes floats with 10 decimals (pandas'
    ``to_json``), so floats agree to 1e-9."""
    assert set(ours) == set(theirs), (text[:60], ours, theirs)
    for key, value in ours.items():
        if isinstance(value, float):
            assert math.isclose(value, theirs[key], rel_tol=1e-9, abs_tol=1e-9), (text[:60], key)
        else:
            assert value == theirs[key], (text[:60], key, value, theirs[key])
