"""Data-Juicer's dataset config (the ``dataset:`` block), read as the runner's own keys.

Data-Juicer names its input either with ``dataset_path`` or with a ``dataset`` block::

    dataset:
      configs:
        - type: remote            # or: local
          source: s3
          path: s3://bucket/corpus/
          aws_region: us-east-1
          endpoint_url: https://minio.example:9000

One config of ``type: local`` or of ``type: remote`` with ``source: s3`` says what
``dataset_path`` (and the ``s3`` block's ``region`` and ``endpoint_url``) say, so such a recipe
runs as written. What cannot be honoured is refused, naming the key: several configs mixed by
weight, ``max_sample_num`` (random sampling), other remote sources, and credentials in the
recipe (the runner takes them from the environment's AWS chain; the value is never echoed). As
in Data-Juicer, ``dataset_path`` wins over ``dataset`` when both are set (with a notice).
"""

from __future__ import annotations

from typing import Any

from dj_runner.errors import RecipeError
from dj_runner.recipe.keys import CREDENTIAL_KEYS, credential_refused

#: The keys of one dataset config the runner honours, and what each becomes.
_CONFIG_KEYS = ("type", "source", "path", "weight", "aws_region", "endpoint_url")


def translate_dataset_block(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``raw`` with its ``dataset`` block turned into ``dataset_path`` (and ``s3``), and the
    notices that say so. A recipe without the block comes back unchanged."""
    if "dataset" not in raw:
        return raw, []
    block = raw["dataset"]
    out = {k: v for k, v in raw.items() if k != "dataset"}
    if raw.get("dataset_path"):
        return out, [
            "dataset: ignored; dataset_path is set and takes precedence, as in Data-Juicer"
        ]
    configs = block.get("configs") if isinstance(block, dict) else None
    if not isinstance(configs, list) or not configs:
        raise RecipeError(
            "dataset", block, "a mapping with 'configs': a list of one dataset config"
        )
    for key in block:
        if key == "max_sample_num":
            raise RecipeError(
                "dataset.max_sample_num",
                block[key],
                "no max_sample_num: the runner processes every sample of its input (sample "
                "the input beforehand)",
            )
        if key != "configs":
            raise RecipeError(f"dataset.{key}", block[key], "only 'configs' in a dataset block")
    if len(configs) > 1:
        raise RecipeError(
            "dataset.configs",
            f"{len(configs)} dataset configs",
            "one dataset config (several files go in one config's path: a directory, an s3:// "
            "prefix or a glob); mixing datasets by weight is not supported",
        )
    config = configs[0]
    where = "dataset.configs[0]"
    if not isinstance(config, dict):
        raise RecipeError(where, config, "a mapping with type, path (and source for remote)")
    for key in config:
        if str(key).lower() in CREDENTIAL_KEYS:
            raise credential_refused(f"{where}.{key}")
        if key not in _CONFIG_KEYS:
            raise RecipeError(f"{where}.{key}", config[key], "one of " + ", ".join(_CONFIG_KEYS))
    kind = config.get("type")
    path = config.get("path")
    if kind not in ("local", "remote"):
        raise RecipeError(f"{where}.type", kind, "local or remote")
    if kind == "remote" and config.get("source") != "s3":
        raise RecipeError(
            f"{where}.source",
            config.get("source"),
            "s3 (the remote source this runner reads; others: download the data first)",
        )
    if not isinstance(path, str) or not path:
        raise RecipeError(f"{where}.path", path, "a path or an s3:// URI")
    if kind == "remote" and not path.startswith("s3://"):
        raise RecipeError(f"{where}.path", path, "an s3://bucket/prefix URI for source s3")
    if config.get("weight", 1) not in (1, 1.0):
        raise RecipeError(f"{where}.weight", config["weight"], "1 (one dataset, taken whole)")
    out["dataset_path"] = path
    s3 = dict(raw.get("s3") or {})
    for theirs, ours in (("aws_region", "region"), ("endpoint_url", "endpoint_url")):
        if config.get(theirs) is None:
            continue
        if s3.get(ours) not in (None, config[theirs]):
            raise RecipeError(
                f"{where}.{theirs}",
                config[theirs],
                f"the same value as s3.{ours} ({s3[ours]}), or only one of the two",
            )
        s3[ours] = config[theirs]
    if s3:
        out["s3"] = s3
    return out, [f"dataset: read as dataset_path {path} (Data-Juicer's dataset config)"]
