"""Locations: s3:// URIs and local paths, the recipe's s3 block, and credentials kept out.

Pure logic only; everything that talks to a store runs against the real server in tests/s3/.
"""

from __future__ import annotations

import re

import pyarrow.fs as pafs
import pytest

from dj_runner.errors import RecipeError
from dj_runner.io.sources import _glob_regex
from dj_runner.plan.preflight import check_s3_locations
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.location import S3Config, resolve, s3_filesystem, scrub, split_s3

BASE = {
    "dataset_path": "s3://corpora/web/",
    "export_path": "s3://results/out.jsonl",
    "process": [{"text_length_filter": {"min_len": 10}}],
}


def test_s3_uris_are_kept_as_written_and_local_paths_resolved(tmp_path):
    recipe = parse_recipe(BASE, base_dir=tmp_path)
    assert recipe.dataset_path == "s3://corpora/web/"
    assert recipe.export_path == "s3://results/out.jsonl"
    local = parse_recipe({**BASE, "dataset_path": "in.jsonl"}, base_dir=tmp_path)
    assert local.dataset_path == str(tmp_path / "in.jsonl")
    assert split_s3("s3://corpora/web/a.jsonl") == ("corpora", "web/a.jsonl")
    loc = resolve(str(tmp_path / "x"))
    assert isinstance(loc.fs, pafs.LocalFileSystem) and not loc.is_s3


@pytest.mark.parametrize("uri", ["s3://A_B/x", "s3://ab/x", "s3:///x"])
def test_a_bad_bucket_name_is_refused_naming_the_key(uri):
    with pytest.raises(RecipeError, match=r"recipe key 'export_path'.*bucket name"):
        split_s3(uri, "export_path")


def test_the_s3_block_sets_endpoint_and_region(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    recipe = parse_recipe(
        {**BASE, "s3": {"endpoint_url": "http://127.0.0.1:9000", "region": "cn-hangzhou"}}
    )
    assert recipe.s3 == S3Config("http://127.0.0.1:9000", "cn-hangzhou")
    fs = s3_filesystem(recipe.s3)
    assert fs.region == "cn-hangzhou"
    with pytest.raises(RecipeError, match=r"s3\.endpoint_url.*http:// or https://"):
        parse_recipe({**BASE, "s3": {"endpoint_url": "ftp://host"}})
    with pytest.raises(RecipeError, match=r"s3\.endpint.*did you mean 'endpoint_url'"):
        parse_recipe({**BASE, "s3": {"endpint": "http://x:1"}})


@pytest.mark.parametrize(
    "where",
    [
        {"aws_secret_access_key": "TOPSECRETVALUE"},
        {"s3": {"secret_access_key": "TOPSECRETVALUE"}},
        {"s3": {"aws_session_token": "TOPSECRETVALUE"}},
        {"s3": {"Access_Key_Id": "TOPSECRETVALUE"}},
        {"dataset_path": "s3://AKIA:TOPSECRETVALUE@corpora/web/"},
        {"export_path": "s3://AKIA:TOPSECRETVALUE@results/out.jsonl"},
    ],
)
def test_inline_credentials_are_refused_without_echoing_them(where):
    raw = {**BASE, **where}
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    message = str(info.value)
    assert "TOPSECRETVALUE" not in message and "AKIA" not in message
    assert "<hidden>" in message and "environment" in message
    key = next(iter(where))
    assert re.search(rf"recipe key '({key}|s3\.\w+)'", message, re.IGNORECASE), message


def test_messages_are_scrubbed_of_the_environment_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-xyz")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-value-abc")
    text = scrub("signature for s3cr3t-value-xyz with token-value-abc failed")
    assert text == "signature for <redacted> with <redacted> failed"


@pytest.mark.parametrize(
    ("dataset", "export"),
    [
        ("s3://b/in", "s3://b/in"),
        ("s3://b/in/", "s3://b/in/out.jsonl"),
        ("s3://b/in/*.jsonl", "s3://b/in/out"),
        ("s3://b/in/a.jsonl", "s3://b/in"),
    ],
)
def test_an_export_inside_or_over_the_input_prefix_is_refused(dataset, export):
    recipe = parse_recipe({**BASE, "dataset_path": dataset, "export_path": export})
    with pytest.raises(RecipeError, match="recipe key 'export_path'"):
        check_s3_locations(recipe)


def test_an_export_beside_the_input_prefix_is_fine():
    recipe = parse_recipe({**BASE, "dataset_path": "s3://b/in", "export_path": "s3://b/in-out"})
    check_s3_locations(recipe)  # no error: a sibling, not inside


def test_globs_over_keys_keep_star_within_a_segment():
    rx = _glob_regex("b/data/*.jsonl")
    assert rx.match("b/data/a.jsonl") and not rx.match("b/data/sub/a.jsonl")
    deep = _glob_regex("b/data/**/*.jsonl")
    assert deep.match("b/data/a.jsonl") and deep.match("b/data/x/y/a.jsonl")
    assert _glob_regex("b/p[0-9].csv").match("b/p7.csv")
    assert not _glob_regex("b/p[!0-9].csv").match("b/p7.csv")


def test_web_identity_is_assumed_by_the_runner_only_at_a_configured_sts_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pyarrow's SDK reaches AWS's own STS itself; a configured STS endpoint (a store's own) is
    reached through botocore, and an access key or a profile comes first in the chain."""
    from dj_runner.store import location

    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/dj")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token")
    assert location.web_identity_endpoint() is None
    assert location.web_identity_keys() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://store:8333")
    assert location.web_identity_endpoint() == "http://store:8333"
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://sts:8333")
    assert location.web_identity_endpoint() == "http://sts:8333"
    monkeypatch.setenv("AWS_PROFILE", "other")
    assert location.web_identity_endpoint() is None
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    assert location.web_identity_endpoint() is None
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_ROLE_ARN")
    assert location.web_identity_endpoint() is None
