"""Oracle: Data-Juicer ops through the runner equal Data-Juicer's own default executor.

Each case is one recipe run twice on the same corpus: by the runner (partitioned, on Ray,
checkpointed, with ``op_implementation: data_juicer`` so even ops that have a built-in
counterpart run Data-Juicer's code) and by Data-Juicer 1.6.1's default executor. The kept
texts must be the same multiset, and so the dropped ones; a filter's stats for each kept
sample must equal Data-Juicer's, under the same key names. The cases cover text mappers,
filters of every family (length, words, character ratios, repetition, lines) and the exact,
MinHash and SimHash deduplicators, whose duplicates straddle partitions.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dj_runner.contract import ExitCode
from dj_runner.engine.executor import Executor
from dj_runner.recipe.parse import parse_recipe
from tests.dj.conftest import (
    CORPUS,
    EDGE_CASES,
    NEEDS_DJ,
    assert_same_stats,
    dj_reference,
    dj_reference_stats,
    read_jsonl,
    text_only_copy,
)

pytest.importorskip("data_juicer", reason=NEEDS_DJ)

pytestmark = pytest.mark.usefixtures("ray_session")

MAPPERS: dict[str, dict[str, Any]] = {
    "whitespace_normalization_mapper": {},
    "punctuation_normalization_mapper": {},
    "clean_email_mapper": {},
    "clean_links_mapper": {},
    "clean_ip_mapper": {},
    "clean_copyright_mapper": {},
    "fix_unicode_mapper": {},
    "remove_specific_chars_mapper": {"chars_to_remove": "◆●■►▼▲▴∆▻▷❖♡□"},
    "remove_long_words_mapper": {"min_len": 2, "max_len": 12},
    "remove_header_mapper": {},
    "remove_comments_mapper": {},
    "remove_repeat_sentences_mapper": {},
    "remove_non_chinese_character_mapper": {},
    "remove_table_text_mapper": {},
    "remove_words_with_incorrect_substrings_mapper": {},
    "clean_html_mapper": {},
    "chinese_convert_mapper": {"mode": "t2s"},
}
FILTERS: dict[str, dict[str, Any]] = {
    "text_length_filter": {"min_len": 100, "max_len": 5000},
    "words_num_filter": {"min_num": 30, "max_num": 800},
    "alphanumeric_filter": {"min_ratio": 0.6},
    "special_characters_filter": {"max_ratio": 0.2},
    "character_repetition_filter": {"rep_len": 5, "max_ratio": 0.2},
    "word_repetition_filter": {"rep_len": 3, "max_ratio": 0.05},
    "average_line_length_filter": {"min_len": 40, "max_len": 2000},
    "maximum_line_length_filter": {"min_len": 80, "reversed_range": True},
}
DEDUPLICATORS: dict[str, dict[str, Any]] = {
    "document_deduplicator": {"lowercase": True, "ignore_non_character": True},
    "document_minhash_deduplicator": {},
    "document_simhash_deduplicator": {},
}
CASES = {
    name: [{name: params}]
    for group in (MAPPERS, FILTERS, DEDUPLICATORS)
    for name, params in group.items()
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus, then a few samples with what the cleaning mappers remove (emails, IPs...)."""
    path = tmp_path_factory.mktemp("dj-data") / "data.jsonl"
    path.write_bytes(CORPUS.read_bytes() + EDGE_CASES.read_bytes())
    return path


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dj-reference")


@pytest.fixture(scope="module")
def reference(dataset: Path, reference_dir: Path) -> dict[str, list[str]]:
    text_only = text_only_copy(dataset, reference_dir / "text-only.jsonl")
    return dj_reference(text_only, CASES, reference_dir / "out")


def run_runner(tmp: Path, dataset: Path, process: list[dict[str, Any]]) -> list[dict[str, Any]]:
    recipe = parse_recipe(
        {
            "project_name": "oracle",
            "dataset_path": str(dataset),
            "export_path": str(tmp / "out.jsonl"),
            "partition_size": 17,  # six partitions; the duplicates lie in the first and last
            "op_implementation": "data_juicer",
            "keep_stats_in_res_ds": True,
            "process": process,
        }
    )
    result = Executor(recipe, work_dir=tmp / "work").run()
    assert result.exit_code == ExitCode.OK, result.error
    return read_jsonl(tmp / "out.jsonl")


def test_enough_ops_are_covered():
    assert len(CASES) >= 20
    assert len(FILTERS) >= 6 and len(DEDUPLICATORS) == 3


@pytest.mark.parametrize("case", sorted(CASES))
def test_runner_equals_data_juicer(
    case: str, dataset: Path, reference: dict[str, list[str]], reference_dir: Path, tmp_path: Path
):
    inputs = Counter(r["text"] for r in read_jsonl(dataset))
    rows = run_runner(tmp_path, dataset, CASES[case])
    ours = Counter(r["text"] for r in rows)
    theirs = Counter(reference[case])
    assert ours == theirs, (
        f"{case}: only the runner kept {list((ours - theirs).elements())[:3]}; "
        f"only Data-Juicer kept {list((theirs - ours).elements())[:3]}"
    )
    if case in MAPPERS:
        assert sum(ours.values()) == sum(inputs.values())
        assert ours != inputs, f"{case} changed no text: the case proves nothing"
    else:
        assert inputs - ours == inputs - theirs  # the same samples dropped
        assert 0 < sum(ours.values()) < sum(inputs.values()), f"{case} kept all or nothing"
    if case in FILTERS:  # the same stats, under Data-Juicer's names
        theirs_stats = dj_reference_stats(reference_dir / "out", case)
        for r in rows:
            assert_same_stats(r["__dj__stats__"], theirs_stats[r["text"]], r["text"])


#: Data-Juicer's Ray deduplicators, with tuning parameters that only their Ray actors use.
RAY_TWINS: dict[str, tuple[str, dict[str, Any]]] = {
    "ray_document_deduplicator": (
        "document_deduplicator",
        {"backend": "ray_actor", "dedup_set_num": 4},
    ),
    "ray_bts_minhash_deduplicator": (
        "document_minhash_deduplicator",
        {"union_find_parallel_num": 2, "merge_batch_size": 500, "minhash_batch_size": "auto"},
    ),
}


@pytest.mark.parametrize("ray_name", sorted(RAY_TWINS))
def test_ray_deduplicators_decide_as_data_juicer_s_document_level_twin(
    ray_name: str, dataset: Path, reference: dict[str, list[str]], tmp_path: Path
):
    """A recipe written for Data-Juicer's Ray executor runs as written: the Ray deduplicator
    keeps what Data-Juicer's default executor keeps with the document-level op."""
    twin, tuning = RAY_TWINS[ray_name]
    params = {**DEDUPLICATORS[twin], **tuning}
    rows = run_runner(tmp_path, dataset, [{ray_name: params}])
    ours = Counter(r["text"] for r in rows)
    assert ours == Counter(reference[twin])
    assert sum(ours.values()) < sum(1 for _ in read_jsonl(dataset)), "nothing was deduplicated"
