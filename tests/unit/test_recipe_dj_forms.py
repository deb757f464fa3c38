"""Forms Data-Juicer's configs use that a plain YAML reading gets wrong or this runner did not
know: ``2e5``-style numbers, whole-number floats for integers, Data-Juicer's other global
keys (accepted with a notice, or refused where ignoring them would change the output)."""

from __future__ import annotations

import pytest
import yaml

from dj_runner.errors import RecipeError
from dj_runner.recipe.parse import parse_recipe

BASE = """
dataset_path: in.jsonl
export_path: out.jsonl
"""


def parse(text: str):
    return parse_recipe(yaml.safe_load(BASE + text))


def test_exponent_numbers_and_whole_floats_are_integers_where_integers_are_expected():
    r = parse(
        """
partition_size: 2e5
max_retries: 3.0
max_partition_size_mb: 1e2
process:
  - text_length_filter: {min_len: 1e1, max_len: 2e5}
  - words_num_filter: {min_num: 10.0}
"""
    )
    assert r.partition.partition_size == 200000 and isinstance(r.partition.partition_size, int)
    assert r.max_retries == 3 and isinstance(r.max_retries, int)
    assert r.partition.max_size_mb == 100.0
    assert r.process[0].params == {"min_len": 10, "max_len": 200000}
    assert r.process[1].params == {"min_num": 10}


@pytest.mark.parametrize("value", ["2.5e0", "10.5", "'12'", "1e400"])
def test_a_number_that_is_no_integer_is_still_refused(value):
    with pytest.raises(RecipeError, match=r"partition_size.*an integer"):
        parse(f"partition_size: {value}\nprocess: [{{text_length_filter: {{}}}}]\n")


def test_data_juicers_other_global_keys_are_accepted_with_notices():
    r = parse(
        """
image_key: images
video_key: videos
audio_key: audios
export_type: jsonl
debug: false
fusion_strategy: probe
encrypt_before_export: false
custom_operator_paths: []
process: [{text_length_filter: {}}]
"""
    )
    for key in (
        "image_key",
        "video_key",
        "export_type",
        "fusion_strategy",
        "encrypt_before_export",
    ):
        assert any(n.startswith(f"{key}: ") for n in r.notices), key


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("encrypt_before_export", "true"),
        ("export_original_dataset", "true"),
        ("custom_operator_paths", "[my_ops.py]"),
    ],
)
def test_a_data_juicer_key_that_would_change_the_output_is_refused_at_another_value(key, value):
    with pytest.raises(RecipeError, match=rf"recipe key '{key}'.*Data-Juicer's default"):
        parse(f"{key}: {value}\nprocess: [{{text_length_filter: {{}}}}]\n")


def test_credentials_in_export_aws_credentials_are_never_echoed():
    with pytest.raises(RecipeError) as err:
        parse("export_aws_credentials: {aws_secret: s3cr3t}\nprocess: [{text_length_filter: {}}]\n")
    assert "s3cr3t" not in str(err.value) and "export_aws_credentials" in str(err.value)
