"""Model files of Data-Juicer ops: resolved offline, from Data-Juicer's model cache only.

Data-Juicer downloads a missing model the first time an op prepares it (at construction for
fastText, KenLM, SentencePiece, NLTK and spaCy models; on first use for Hugging Face ones).
A job must never download in the middle of a partition, so ``offline_models`` replaces its
``check_model`` with a lookup that only looks (the name as a path, each directory of
``DATA_JUICER_EXTERNAL_MODELS_HOME``, then ``DATA_JUICER_MODELS_CACHE``) and raises
``MissingModel`` naming the model and every place looked in. ``ensure_models`` checks an
op's Hugging Face models against the local Hugging Face cache the same way. Both run when
the recipe is validated, before any work starts, and again in each worker.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from dj_runner.errors import RunnerError


class MissingModel(RunnerError):
    """A model an op needs is not on this machine; nothing is downloaded at run time."""

    def __init__(self, op_name: str | None, model: str, looked_in: list[str]):
        self.model = model
        self.looked_in = looked_in
        who = f"op '{op_name}' needs" if op_name else "a Data-Juicer op needs"
        super().__init__(
            f"{who} the model {model!r}, which is not on this machine (looked in: "
            f"{', '.join(looked_in)}); the runner never downloads models during a job: put the "
            "file there (or set DATA_JUICER_MODELS_CACHE to the directory that holds it)"
        )


def model_dirs() -> list[str]:
    """Where Data-Juicer's model files are looked for, in order."""
    from data_juicer.utils import cache_utils

    dirs = []
    external = os.environ.get("DATA_JUICER_EXTERNAL_MODELS_HOME") or getattr(
        cache_utils, "DATA_JUICER_EXTERNAL_MODELS_HOME", None
    )
    if external:
        dirs.extend(p.strip() for p in str(external).split(os.pathsep) if p.strip())
    dirs.append(
        os.path.expanduser(
            os.environ.get("DATA_JUICER_MODELS_CACHE") or cache_utils.DATA_JUICER_MODELS_CACHE
        )
    )
    return dirs


def find_model(model_name: str) -> str:
    """The local path of a model file, or ``MissingModel``."""
    if os.path.exists(model_name):
        return model_name
    for d in model_dirs():
        path = os.path.join(d, model_name)
        if os.path.exists(path):
            return path
    raise MissingModel(None, model_name, [f"{model_name} as a path", *model_dirs()])


def _offline_check_model(model_name: str, force: bool = False) -> str:
    if force:  # Data-Juicer's "the file is broken, download it again"
        raise MissingModel(
            None, model_name, [f"{find_model(model_name)} (present but could not be loaded)"]
        )
    return find_model(model_name)


def _replace_everywhere(original: Any, replacement: Any) -> None:
    """Rebind ``original`` in every loaded Data-Juicer module (ops import helpers by name)."""
    import sys

    for mod_name, module in list(sys.modules.items()):
        if not mod_name.startswith("data_juicer") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, replacement)


def _offline_words_asset(words_dir: str, words_type: str) -> dict[str, list[str]]:
    """Data-Juicer's ``load_words_asset`` without the download: the files must be there."""
    import json

    words: dict[str, list[str]] = {}
    directory = Path(words_dir)
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.suffix == ".json" and words_type in path.name:
                for lang, values in json.loads(path.read_text()).items():
                    words.setdefault(lang, []).extend(values)
    if not words:
        raise MissingModel(None, f"{words_type}.json (a word list)", [str(directory)])
    return words


_PATCHED = False


def offline_models() -> None:
    """Make Data-Juicer's model and word-list lookups local-only (idempotent).

    Call after ``data_juicer.ops`` is imported: the ops hold these helpers by name.
    """
    global _PATCHED
    if _PATCHED:
        return
    from data_juicer.utils import asset_utils, model_utils

    _replace_everywhere(model_utils.check_model, _offline_check_model)
    _replace_everywhere(asset_utils.load_words_asset, _offline_words_asset)
    _no_nltk_downloads()
    _PATCHED = True


def _no_nltk_downloads() -> None:
    """Data-Juicer falls back to ``nltk.download`` when an NLTK resource is missing."""
    import importlib.util

    if importlib.util.find_spec("nltk") is None:
        return  # the op will report the missing package instead
    import nltk

    def refuse(info_or_id: object = None, *_: object, **__: object) -> bool:
        raise MissingModel(None, f"NLTK resource {info_or_id}", [str(p) for p in nltk.data.path])

    nltk.download = refuse


def _hf_available(name: str) -> tuple[bool, list[str]]:
    from data_juicer.utils import model_utils

    home = getattr(model_utils, "DJEMH", None) or os.environ.get("DATA_JUICER_EXTERNAL_MODELS_HOME")
    candidates = [name]
    if home:
        candidates.append(os.path.join(home, name))
    if any(Path(c).exists() for c in candidates):
        return True, candidates
    try:
        from huggingface_hub import constants, try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
        return isinstance(found, str), [*candidates, f"Hugging Face cache {constants.HF_HUB_CACHE}"]
    except Exception:
        return False, candidates


def ensure_models(op_name: str, op: Any) -> None:
    """Raise ``MissingModel`` when one of ``op``'s Hugging Face models is not cached locally."""
    for value in vars(op).values():
        if not isinstance(value, functools.partial):
            continue
        func_name = getattr(value.func, "__name__", "")
        if func_name != "prepare_huggingface_model":
            continue
        name = value.keywords.get("pretrained_model_name_or_path")
        if not name:
            continue
        ok, looked = _hf_available(str(name))
        if not ok:
            raise MissingModel(op_name, str(name), looked)
