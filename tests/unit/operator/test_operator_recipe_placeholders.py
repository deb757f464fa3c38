"""The operator validates a recipe with Data-Juicer's placeholders as the runner will run it:
``{work_dir}`` and ``{job_id}`` are filled with what the runner pod is given."""

from __future__ import annotations

from dj_operator.api.validation import validate_recipe


def test_work_dir_placeholders_resolve_to_the_runner_s_work_dir() -> None:
    recipe = {
        "dataset_path": "input/data.jsonl",
        "export_path": "{work_dir}/processed.jsonl",
        "process": [{"whitespace_normalization_mapper": {}}],
    }
    paths = validate_recipe(
        recipe, "/data", work_dir="/data/.datajuicer/ns/demo", job_id="ns-demo-1234"
    )
    assert paths == {
        "dataset_path": "/data/input/data.jsonl",
        "export_path": "/data/.datajuicer/ns/demo/processed.jsonl",
    }


def test_a_recipe_without_placeholders_resolves_under_the_mount_as_before() -> None:
    recipe = {
        "dataset_path": "in.jsonl",
        "export_path": "out/result.jsonl",
        "process": [{"whitespace_normalization_mapper": {}}],
    }
    paths = validate_recipe(recipe, "/data", work_dir="/data/w", job_id="j")
    assert paths == {"dataset_path": "/data/in.jsonl", "export_path": "/data/out/result.jsonl"}


def test_an_s3_export_is_reported_as_its_uri() -> None:
    recipe = {
        "dataset_path": "s3://corpus/in/",
        "export_path": "s3://corpus/out/result.jsonl",
        "work_dir": "/data/w",
        "process": [{"whitespace_normalization_mapper": {}}],
    }
    paths = validate_recipe(recipe, "/data", work_dir="/data/w", job_id="j")
    assert paths == {
        "dataset_path": "s3://corpus/in/",
        "export_path": "s3://corpus/out/result.jsonl",
    }
