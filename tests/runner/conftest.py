"""Fixtures for runner tests: the committed corpora, an in-process Ray, recipe and CLI helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent / "support"
CORPORA = REPO / "tests" / "data" / "corpora"
DEMO = REPO / "examples" / "data" / "demo.jsonl"


@pytest.fixture(scope="session", autouse=True)
def test_ops_env() -> Iterator[None]:
    """Test-only ops (tests/runner/support) load like a user's custom ops, in every process.

    Set for the runner tests' session (before any Ray starts) and restored afterwards.
    """
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "DJ_RUNNER_OP_MODULES")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH", "")])
    )
    os.environ["DJ_RUNNER_OP_MODULES"] = "dj_test_ops"
    sys.path.insert(0, str(SUPPORT))
    yield
    sys.path.remove(str(SUPPORT))
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def corpora() -> Path:
    """Small real corpora committed under tests/data/corpora (see its README)."""
    return CORPORA


@pytest.fixture(scope="session")
def ray_session(test_ops_env: None) -> Iterator[None]:
    """One embedded Ray for the in-process tests of this session (private: never a Ray
    that /tmp/ray names)."""
    from dj_runner.engine.ray_env import connect, stop_embedded

    connect(None, 2)
    yield
    stop_embedded(graceful=True)


def write_recipe(path: Path, **recipe: Any) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def run_cli(*args: str, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dj_runner.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


STANDARD_OPS = [
    {"whitespace_normalization_mapper": {}},
    {"clean_email_mapper": {}},
    {"clean_links_mapper": {}},
    {"text_length_filter": {"min_len": 20, "max_len": 20000}},
    {"document_deduplicator": {"lowercase": True}},
]


def reference_texts(records: list[dict[str, Any]], process: list[dict[str, Any]]) -> list[str]:
    """The recipe applied to all records as one table, in one process: the expected output."""
    import pyarrow as pa

    from dj_runner.engine.apply import add_hashes, apply_keep_mask, apply_local
    from dj_runner.ops.common.base import HASH_COLUMN
    from dj_runner.recipe.parse import build_op

    table = pa.table({"text": pa.array([r.get("text") for r in records], pa.string())})
    for i, item in enumerate(process):
        ((name, params),) = item.items()
        op = build_op(name, params or {}, f"process[{i}]").op
        if op.is_global:
            table = add_hashes(op, table, "text")
            seen: set[str] = set()
            keep = []
            for h in table.column(HASH_COLUMN).to_pylist():
                keep.append(h not in seen)
                seen.add(h)
            table = apply_keep_mask(table, pa.array(keep))
        else:
            table = apply_local(op, table, "text")
    return table.column("text").to_pylist()
