"""Fixtures for the observability tests: promtool, an embedded Ray, a small real job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "tests" / "runner" / "support"
DEMO = REPO / "examples" / "data" / "demo.jsonl"

# The test-only ops (flaky_mapper) load like a user's custom ops, in every Ray worker too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH", "")])
)
os.environ["DJ_RUNNER_OP_MODULES"] = "dj_test_ops"
sys.path.insert(0, str(SUPPORT))

PROMTOOL_MISSING = (
    "promtool is not on PATH: install it (Debian/Ubuntu: apt-get install -y prometheus; "
    "it ships promtool) to check metrics and test the alert rules"
)


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(PROMTOOL_MISSING)
    return path


def promtool_check_metrics(promtool: str, exposition: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition text (lint: names, units, help)."""
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="package")
def ray_session() -> Iterator[None]:
    """An embedded Ray for this package's in-process jobs, shut down after its last test
    (so the runner tests' own session fixture can start theirs); reuses one already up."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


from .prometheus import prometheus  # noqa: E402  (the fixture, for every test here)

__all__ = ["prometheus"]
