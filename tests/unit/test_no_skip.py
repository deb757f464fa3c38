"""Under DJ_TESTS_NO_SKIP=1 (set by `make test`, so in CI) a skipped test fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pytest(tmp_path: Path, no_skip: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_needs_a_tool():\n"
        "    pytest.skip('no such tool here')\n\n"
        "@pytest.mark.xfail(reason='known', strict=True)\n"
        "def test_expected_failure():\n"
        "    assert False\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJ_TESTS_NO_SKIP"}
    if no_skip:
        env["DJ_TESTS_NO_SKIP"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         str(tmp_path / "test_skips.py")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_skip_is_a_failure_when_every_test_must_run(tmp_path: Path) -> None:
    strict = _pytest(tmp_path, no_skip=True)
    assert strict.returncode == 1, strict.stdout
    assert "requires every test to run: no such tool here" in strict.stdout
    assert "1 failed, 1 xfailed" in strict.stdout  # an expected failure stays one


def test_a_skip_is_a_skip_otherwise(tmp_path: Path) -> None:
    lenient = _pytest(tmp_path, no_skip=False)
    assert lenient.returncode == 0, lenient.stdout
    assert "1 skipped, 1 xfailed" in lenient.stdout
