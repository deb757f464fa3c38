"""How the driver's errors map to the contract's exit codes, and the CLI's guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from dj_runner.cli import main
from dj_runner.contract import ExitCode
from dj_runner.engine.executor import JobResult, _exit_code_for
from dj_runner.engine.partition_task import SourceChanged
from dj_runner.errors import (
    InvalidInput,
    NoSpace,
    PlanRefused,
    RayUnavailable,
    RecipeError,
    RunnerError,
)
from dj_runner.store.fencing import Superseded


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SourceChanged("x"), ExitCode.REFUSED),
        (PlanRefused("x"), ExitCode.REFUSED),
        (RecipeError("k", 1, "2"), ExitCode.USAGE),
        (InvalidInput("x"), ExitCode.USAGE),
        (Superseded("x"), ExitCode.LOCKED),
        (RayUnavailable("x"), ExitCode.RAY_UNAVAILABLE),
        (RunnerError("x"), ExitCode.FAILED),
        (NoSpace("/w/p.parquet", "no space left on device", 0, 4096), ExitCode.NO_SPACE),
        (OSError(28, "No space left on device"), ExitCode.NO_SPACE),
        (OSError(122, "Disk quota exceeded"), ExitCode.NO_SPACE),
        (OSError(30, "Read-only file system"), ExitCode.FAILED),
        (KeyError("bug"), ExitCode.INTERNAL),
    ],
)
def test_errors_map_to_the_contracts_exit_codes(error: BaseException, code: int) -> None:
    assert _exit_code_for(error) == code


def test_job_result_codes() -> None:
    assert JobResult("interrupted", "j", "w", None).exit_code == 6
    assert JobResult("partially_succeeded", "j", "w", None).exit_code == 3
    assert JobResult("failed", "j", "w", None, code=7).exit_code == 7
    assert JobResult("failed", "j", "w", None).to_dict()["exit_code"] == 1


def test_a_recipe_that_is_not_utf8_is_a_clear_error(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes(b"# caf\xe9\nproject_name: x\n")
    assert main(["validate", str(recipe)]) == ExitCode.USAGE
    assert "not UTF-8" in capsys.readouterr().err
