"""Each extra installed alone in a fresh virtual environment, as a user does, then used for what
it serves: the runner alone runs a recipe on both engines and has none of the operator's
libraries; the operator extra starts the operator's command and imports its handlers. (The
``dj`` extra alone is tested in ``tests/dj``, which runs in such an environment.)

Installs from the repository with pip, so it needs the package index (or pip's cache).
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO_RECIPE = REPO / "examples" / "recipe.yaml"

pytestmark = pytest.mark.slow


def _fresh_env(root: Path, spec: str) -> Path:
    """A new virtual environment with ``datajuicer-operator<spec>`` installed; its bin dir."""
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    bin_dir = root / "bin"
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{REPO}{spec}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return bin_dir


def _imports(bin_dir: Path, module: str) -> bool:
    probe = subprocess.run(
        [str(bin_dir / "python"), "-c", f"import {module}"], capture_output=True, timeout=120
    )
    return probe.returncode == 0


def test_the_runner_alone_runs_a_recipe_on_both_engines(tmp_path: Path) -> None:
    bin_dir = _fresh_env(tmp_path / "venv", "")
    assert not _imports(bin_dir, "kopf") and not _imports(bin_dir, "kubernetes")
    outputs = {}
    for engine in ("local", "ray"):
        recipe = yaml.safe_load(DEMO_RECIPE.read_text())
        recipe["dataset_path"] = str(REPO / recipe["dataset_path"])  # relative to the repository
        recipe["export_path"] = str(tmp_path / engine / "out.jsonl")
        path = tmp_path / f"{engine}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        proc = subprocess.run(
            [
                str(bin_dir / "dj-runner"),
                "run",
                str(path),
                "--work-dir",
                str(tmp_path / engine / "w"),
                "--engine",
                engine,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[engine] = (tmp_path / engine / "out.jsonl").read_bytes()
    assert outputs["local"] == outputs["ray"] and outputs["local"].count(b"\n") == 183


def test_the_operator_extra_alone_starts_the_operator(tmp_path: Path) -> None:
    bin_dir = _fresh_env(tmp_path / "venv", "[operator]")
    help_text = subprocess.run(
        [str(bin_dir / "dj-operator"), "run", "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_text.returncode == 0 and "--namespace" in help_text.stdout, help_text.stderr
    assert _imports(bin_dir, "dj_operator.handlers.kopf_handlers")
    assert not _imports(bin_dir, "pytest")  # nothing of the test tools came with it
