"""A directory export only ever deletes what the runner wrote (issue 8, C1)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from dj_runner.errors import RecipeError
from dj_runner.io.export import EXPORT_MARKER, check_export_target, remove_export, write_export


def export(path: Path, n_parts: int = 2) -> int:
    tables = [pa.table({"text": [f"p{i} r{j}" for j in range(3)]}) for i in range(n_parts)]
    return write_export(
        str(path), lambda: (iter([t]) for t in tables), [t.schema for t in tables], False
    )


def test_a_non_empty_directory_the_runner_did_not_create_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("my precious notes")
    with pytest.raises(RecipeError, match=r"export_path.*holds other files"):
        check_export_target(str(results))
    with pytest.raises(RecipeError):
        export(results)
    assert (results / "notes.txt").read_text() == "my precious notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no temporaries left


def test_the_current_directory_is_never_wiped(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "recipe.yaml").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError):
        check_export_target("./")
    assert (tmp_path / "recipe.yaml").exists()


def test_an_empty_or_owned_directory_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert export(out, 3) == 9
    assert sorted(p.name for p in out.iterdir()) == [
        EXPORT_MARKER,
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
    ]
    assert export(out, 1) == 3  # owned: replaced, the old shards go
    assert sorted(p.name for p in out.iterdir()) == [EXPORT_MARKER, "part-00000.jsonl"]


def test_an_owned_directory_with_a_users_file_added_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(out)
    (out / "analysis.ipynb").write_text("{}")
    with pytest.raises(RecipeError):
        export(out)
    remove_export(str(out))  # --restart removes only the runner's files
    assert sorted(p.name for p in out.iterdir()) == ["analysis.ipynb"]


def test_restart_removes_an_owned_export_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(out)
    remove_export(str(out))
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.me").write_text("x")
    remove_export(str(mine))
    assert (mine / "keep.me").exists()
    single = tmp_path / "r.jsonl"
    single.write_text("{}\n")
    remove_export(str(single))
    assert not single.exists()


def test_a_file_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").mkdir()
    with pytest.raises(RecipeError, match="directory"):
        check_export_target(str(tmp_path / "r.jsonl"))
