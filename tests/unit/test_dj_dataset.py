"""Data-Juicer's ``dataset:`` block read as dataset_path (and the s3 block), or refused by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dj_runner.errors import RecipeError
from dj_runner.recipe.parse import parse_recipe

OPS = [{"whitespace_normalization_mapper": None}]


def recipe(**keys: object) -> dict[str, object]:
    return {"export_path": "/out/o.jsonl", "process": OPS, **keys}


def remote(**config: object) -> dict[str, object]:
    return {"configs": [{"type": "remote", "source": "s3", "path": "s3://corpora/web/", **config}]}


def test_an_s3_dataset_config_becomes_dataset_path_and_the_s3_block(tmp_path: Path) -> None:
    r = parse_recipe(
        recipe(dataset=remote(aws_region="cn-hangzhou", endpoint_url="https://oss.example")),
        tmp_path,
    )
    assert r.dataset_path == "s3://corpora/web/"
    assert (r.s3.region, r.s3.endpoint_url) == ("cn-hangzhou", "https://oss.example")
    assert any("dataset: read as dataset_path s3://corpora/web/" in n for n in r.notices)


def test_a_local_dataset_config_becomes_dataset_path(tmp_path: Path) -> None:
    r = parse_recipe(recipe(dataset={"configs": [{"type": "local", "path": "d.jsonl"}]}), tmp_path)
    assert r.dataset_path == str(tmp_path / "d.jsonl")


def test_dataset_path_wins_over_the_block_with_a_notice(tmp_path: Path) -> None:
    r = parse_recipe(recipe(dataset_path="/in/a.jsonl", dataset=remote()), tmp_path)
    assert r.dataset_path == "/in/a.jsonl"
    assert any("dataset: ignored" in n for n in r.notices)


@pytest.mark.parametrize(
    ("block", "key", "says"),
    [
        ({"configs": []}, "dataset", "a list of one dataset config"),
        (
            {"configs": [remote()["configs"][0], remote()["configs"][0]]},
            "dataset.configs",
            "mixing datasets by weight",
        ),
        ({**remote(), "max_sample_num": 10}, "dataset.max_sample_num", "every sample"),
        (remote(source="hf"), "dataset.configs[0].source", "s3"),
        (remote(weight=0.5), "dataset.configs[0].weight", "taken whole"),
        (remote(path="/local/path"), "dataset.configs[0].path", "s3://"),
        (remote(format="jsonl"), "dataset.configs[0].format", "one of type, source"),
        ({"configs": [{"type": "hub", "path": "x"}]}, "dataset.configs[0].type", "local or remote"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_key(
    tmp_path: Path, block: dict[str, object], key: str, says: str
) -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe(dataset=block), tmp_path)
    assert err.value.key == key and says in str(err.value)


def test_credentials_in_a_dataset_config_are_refused_without_their_value(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe(dataset=remote(aws_secret_access_key="s3cr3t-value")), tmp_path)
    assert err.value.key == "dataset.configs[0].aws_secret_access_key"
    assert "s3cr3t-value" not in str(err.value)


def test_a_region_that_contradicts_the_s3_block_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe(dataset=remote(aws_region="a"), s3={"region": "b"}), tmp_path)
    assert err.value.key == "dataset.configs[0].aws_region"
