"""Claiming a work dir: fingerprint (recipe + runner + op versions), damaged state, names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dj_runner
from dj_runner.errors import RecipeError, ResumeRefused
from dj_runner.plan.manifest import check_project_name, claim_work_dir, default_work_dir
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.checkpoint import COMMITS
from dj_runner.store.workdir import WorkDir


def recipe(tmp: Path, **over):
    raw = {
        "project_name": "p",
        "dataset_path": str(tmp / "in.jsonl"),
        "export_path": str(tmp / "out" / "r.jsonl"),
        "process": [{"text_length_filter": {"min_len": 5}}],
    }
    raw.update(over)
    return parse_recipe(raw)


def test_a_new_work_dir_is_claimed_then_resumed(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "w")
    first = claim_work_dir(work, recipe(tmp_path), "job-1", restart=False)
    assert (first.job_id, first.resuming) == ("job-1", False)
    again = claim_work_dir(work, recipe(tmp_path), None, restart=False)
    assert (again.job_id, again.resuming) == ("job-1", True)


def test_a_runner_version_change_is_refused(tmp_path: Path, monkeypatch) -> None:
    work = WorkDir(tmp_path / "w")
    claim_work_dir(work, recipe(tmp_path), None, restart=False)
    monkeypatch.setattr(dj_runner, "__version__", "9.9.9")
    monkeypatch.setattr("dj_runner.plan.manifest.__version__", "9.9.9")
    with pytest.raises(ResumeRefused, match=r"runner .*runner_version.*9\.9\.9"):
        claim_work_dir(work, recipe(tmp_path), None, restart=False)


def test_an_op_implementation_version_change_is_refused(tmp_path: Path, monkeypatch) -> None:
    work = WorkDir(tmp_path / "w")
    r = recipe(tmp_path)
    claim_work_dir(work, r, None, restart=False)
    monkeypatch.setattr(type(r.process[0].op), "version", 2, raising=False)
    with pytest.raises(ResumeRefused, match=r"op_versions\.text_length_filter: 1 -> 2"):
        claim_work_dir(work, recipe(tmp_path), None, restart=False)


def test_a_recipe_change_is_refused_with_a_diff(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "w")
    claim_work_dir(work, recipe(tmp_path), None, restart=False)
    changed = recipe(tmp_path, process=[{"text_length_filter": {"min_len": 6}}])
    with pytest.raises(ResumeRefused, match=r"recipe changed.*min_len: 5 -> 6"):
        claim_work_dir(work, changed, None, restart=False)


def stale_progress(work: WorkDir) -> None:
    work.checkpoint_dir(0).mkdir(parents=True)
    (work.checkpoint_dir(0) / COMMITS).write_text("{}\n")
    work.plan_path.write_text("{}")


def test_progress_without_a_manifest_is_recomputed_not_reused(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "w")
    stale_progress(work)
    claim = claim_work_dir(work, recipe(tmp_path), None, restart=False)
    assert not claim.resuming and "missing" in claim.recovered
    assert not work.checkpoints_dir.exists() and not work.plan_path.exists()


@pytest.mark.parametrize("damage", ['{"job_id": "x", "fingerpr', "[]", '{"a": 1}'])
def test_a_damaged_manifest_never_mixes_and_restart_always_works(
    tmp_path: Path, damage: str
) -> None:
    work = WorkDir(tmp_path / "w")
    stale_progress(work)
    work.manifest_path.write_text(damage)
    claim = claim_work_dir(work, recipe(tmp_path), None, restart=False)
    assert "damaged" in claim.recovered and not work.checkpoints_dir.exists()
    stale_progress(work)
    work.manifest_path.write_text(damage)
    claim = claim_work_dir(work, recipe(tmp_path), None, restart=True)
    assert not claim.resuming and not work.checkpoints_dir.exists()
    assert json.loads(work.manifest_path.read_text())["job_id"] == claim.job_id


@pytest.mark.parametrize("name", ["../../../escaped/evil", "/abs", "a/b", "..", ".hidden", ""])
def test_project_name_must_be_one_path_component(name: str) -> None:
    with pytest.raises(RecipeError, match="project_name"):
        check_project_name(name)


def test_default_work_dirs_of_two_recipes_differ(tmp_path: Path) -> None:
    a = default_work_dir(recipe(tmp_path, export_path=str(tmp_path / "out" / "a.jsonl")))
    b = default_work_dir(recipe(tmp_path, export_path=str(tmp_path / "out" / "b.jsonl")))
    assert a != b and a.parent == b.parent == tmp_path / "out"
    assert a == default_work_dir(recipe(tmp_path, export_path=str(tmp_path / "out" / "a.jsonl")))
    assert a.name.startswith("p-") and a.name.endswith("-work")
