"""Pre-flight: what run would refuse about paths, writability and fields, found before work."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dj_runner.errors import RecipeError
from dj_runner.plan.preflight import check_writable, preflight
from dj_runner.recipe.parse import parse_recipe


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.jsonl").write_text('{"text": "one", "meta": 1}\n{"text": "two"}\n')
    return d


def recipe(**keys):
    raw = {"process": ["whitespace_normalization_mapper"], **keys}
    return parse_recipe({k: str(v) if isinstance(v, Path) else v for k, v in raw.items()})


def refused(rec, work: Path) -> str:
    with pytest.raises(RecipeError) as info:
        preflight(rec, work)
    return str(info.value)


def test_a_sound_recipe_passes_and_leaves_no_probe(tmp_path, data):
    out = tmp_path / "out"
    found = preflight(recipe(dataset_path=data, export_path=out / "r.jsonl"), out / "wd")
    assert [Path(s.path).name for s in found.sources] == ["a.jsonl"]
    assert not out.exists()  # nothing created; the probe went into the nearest existing dir
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dj-runner-probe")]


def test_export_equal_to_the_input_is_refused(tmp_path, data):  # M1
    f = data / "a.jsonl"
    msg = refused(recipe(dataset_path=f, export_path=f), tmp_path / "wd")
    assert "'export_path'" in msg and "other than dataset_path" in msg


def test_export_or_work_dir_inside_the_dataset_directory_is_refused(tmp_path, data):  # M15
    msg = refused(recipe(dataset_path=data, export_path=data / "out" / "r.jsonl"), tmp_path / "w")
    assert "outside the dataset directory" in msg
    msg = refused(
        recipe(dataset_path=str(data) + "/*.jsonl", export_path=tmp_path / "r.jsonl"),
        data / "wd",
    )
    assert "'work_dir'" in msg and "outside the dataset directory" in msg


def test_export_that_contains_the_input_or_work_dir_is_refused(tmp_path, data):  # C1
    msg = refused(recipe(dataset_path=data / "a.jsonl", export_path=tmp_path), tmp_path / "x")
    assert "does not contain the dataset_path" in msg
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.jsonl").write_text('{"text": "b"}\n')
    msg = refused(recipe(dataset_path=other / "b.jsonl", export_path=data), data / "wd")
    assert "does not contain the work dir" in msg


def test_missing_dataset_and_empty_glob_are_refused(tmp_path):  # m3
    msg = refused(
        recipe(dataset_path=tmp_path / "nope.jsonl", export_path=tmp_path / "r.jsonl"), tmp_path
    )
    assert "'dataset_path'" in msg
    msg = refused(
        recipe(dataset_path=tmp_path / "*.jsonl", export_path=tmp_path / "r.jsonl"), tmp_path
    )
    assert "a glob that matches files" in msg


def test_a_file_in_the_way_of_a_directory_is_refused(tmp_path, data):  # M9
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    rec = recipe(dataset_path=data, export_path=tmp_path / "o" / "r.jsonl")
    assert "is a file" in refused(rec, blocker)
    assert "is a file" in refused(rec, blocker / "sub")
    rec = recipe(dataset_path=data, export_path=blocker / "r.jsonl")
    assert "'export_path'" in refused(rec, tmp_path / "wd")


def test_an_unwritable_location_is_found_by_a_real_probe(tmp_path):  # M9
    with pytest.raises(RecipeError, match="a writable location"):
        check_writable("export_path", Path("/proc/1/dj-runner-out"))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root writes anyway; the /proc case above still ran
            check_writable("export_path", ro)
        else:
            with pytest.raises(RecipeError, match="a writable location"):
                check_writable("export_path", ro / "sub")
    finally:
        ro.chmod(0o755)


def test_text_keys_no_record_has_are_refused(tmp_path, data):  # M5
    rec = recipe(dataset_path=data, export_path=tmp_path / "r.jsonl", text_keys="txt")
    msg = refused(rec, tmp_path / "wd")
    assert "'text_keys'" in msg and "'txt'" in msg and "did you mean 'text'" in msg
    rec = recipe(dataset_path=data, export_path=tmp_path / "r.jsonl", text_keys=["text", "meta"])
    preflight(rec, tmp_path / "wd")  # one record has meta: accepted
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "c.parquet")
    rec = recipe(dataset_path=tmp_path / "c.parquet", export_path=tmp_path / "r.jsonl")
    assert "none of the first 1 records has 'text'" in refused(rec, tmp_path / "wd")


def test_jsonl_checkpoints_over_types_they_cannot_keep_are_refused(tmp_path):  # M16
    table = pa.table({"text": ["x"], "m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))})
    pq.write_table(table, tmp_path / "m.parquet")
    keys = {"dataset_path": tmp_path / "m.parquet", "export_path": tmp_path / "o" / "r.parquet"}
    msg = refused(recipe(storage_format="jsonl", **keys), tmp_path / "wd")
    assert "'storage_format'" in msg and "column 'm'" in msg
    preflight(recipe(storage_format="parquet", **keys), tmp_path / "wd")
