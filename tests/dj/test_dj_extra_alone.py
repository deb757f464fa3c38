"""The dj extra alone runs Data-Juicer ops: this environment holds it without the operator.

``make install-dj`` installs ``.[testtools,dj]`` and nothing else, so a package Data-Juicer
imports but the ``dj`` extra forgets (as aiohttp was: the operator's kopf brought it along in
the full test environment) fails these tests instead of hiding behind another extra.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.dj.conftest import NEEDS_DJ

pytest.importorskip("data_juicer", reason=NEEDS_DJ)


@pytest.mark.parametrize("module", ["kopf", "kubernetes"])
def test_the_operator_is_not_installed_here(module):
    assert importlib.util.find_spec(module) is None, (
        f"{module} is importable: tests/dj must run in an environment with only the dj extra "
        "and the test runner (make install-dj installs .[testtools,dj] in .venv-dj)"
    )


def test_a_data_juicer_only_op_runs_with_the_dj_extra_alone(tmp_path):
    data = tmp_path / "in.jsonl"
    rows = [
        {"text": "/* Copyright 2024 Someone. All rights reserved. */\nint main() { return 0; }"},
        {"text": "plain text without any notice, long enough to keep"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.json"  # JSON is YAML
    recipe.write_text(
        json.dumps(
            {
                "dataset_path": str(data),
                "export_path": str(tmp_path / "out.jsonl"),
                "np": 1,
                "process": [{"clean_copyright_mapper": {}}],
            }
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dj_runner.cli",
            "run",
            str(recipe),
            "--work-dir",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line)["text"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out[0] == "\nint main() { return 0; }"  # the notice removed, as Data-Juicer does
    assert out[1] == rows[1]["text"]
