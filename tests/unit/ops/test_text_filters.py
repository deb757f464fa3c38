"""Word, character-ratio, repetition and line-length filters: stats and keep, as Data-Juicer.

Expected stats were derived by hand from Data-Juicer 1.6.1's definitions (and its own tests'
samples); a null text is computed as "".
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from dj_runner.ops.common.base import MAXSIZE
from dj_runner.ops.common.registry import get_op

SUND = "Today is Sund Sund Sund Sund Sund Sunda and it's a happy day!"
LETTERS = "a v s e c s f e f g a a a  "
PUNCT = "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"
CJK = "中文也是一个字算一个长度"
SUNDAY = "Today is Sunday Sunday Sunday Sunday Sunday and it's a happy day!"
SIGMA = "ΣΑΣ σας ΣΑΣ σας"


def stats(name: str, texts: list[str | None], **params: object) -> list[object]:
    op = get_op(name)(**params)
    (key,) = op.stats_types
    out = op.compute_stats(pa.array(texts, pa.string()))
    assert list(out) == [key]
    assert out[key].type == op.stats_types[key]
    assert len(out[key]) == len(texts)
    return out[key].to_pylist()


def kept(name: str, texts: list[str | None], **params: object) -> list[bool]:
    op = get_op(name)(**params)
    return op.keep(op.compute_stats(pa.array(texts, pa.string()))).to_pylist()


class TestWordsNum:
    def test_counts(self) -> None:
        texts = [SUND, LETTERS, PUNCT, CJK, "", None, "a\u00a0b c\rd", "😀 !! ok... Г"]
        # NBSP and CR do not split words; emoji, '!!' and 'Г' are all special characters.
        assert stats("words_num_filter", texts) == [13, 13, 1, 1, 0, 0, 2, 1]

    def test_data_juicer_case(self) -> None:
        texts = ["Today is Sun", SUND, LETTERS, PUNCT]
        assert kept("words_num_filter", texts, min_num=5, max_num=15) == [False, True, True, False]

    def test_tokenization_rejected(self) -> None:
        with pytest.raises(ValueError, match="model download"):
            get_op("words_num_filter")(tokenization=True)

    def test_defaults(self) -> None:
        op = get_op("words_num_filter")()
        assert (op.lang, op.tokenization, op.min_num, op.max_num) == ("en", False, 10, MAXSIZE)


class TestAlphanumeric:
    def test_ratio(self) -> None:
        texts = [SUND, PUNCT, CJK, "", None, "①Ⅻ²½ab"]
        # isalnum: CJK ideographs, circled/Roman/superscript/fraction numerals all count
        assert stats("alphanumeric_filter", texts) == [
            47 / 61,
            1 / 34,
            1.0,
            0.0,
            0.0,
            1.0,
        ]

    def test_keep_default_range(self) -> None:
        assert kept("alphanumeric_filter", [SUND, PUNCT, "", None]) == [True, False, False, False]

    def test_tokenization_rejected(self) -> None:
        with pytest.raises(ValueError, match="download"):
            get_op("alphanumeric_filter")(tokenization=True)

    def test_open_interval_and_reversed_range(self) -> None:
        texts = ["ab!!", "abc!"]  # 0.5 and 0.75
        assert kept("alphanumeric_filter", texts, min_ratio=0.5, max_ratio=0.75) == [True, True]
        open_lo = kept("alphanumeric_filter", texts, min_ratio=0.5, min_closed_interval=False)
        assert open_lo == [False, True]
        rev = kept("alphanumeric_filter", texts, min_ratio=0.6, max_ratio=1.0, reversed_range=True)
        assert rev == [True, False]


class TestSpecialCharacters:
    def test_ratio(self) -> None:
        texts = [SUND, PUNCT, CJK, "", None, "😀 !! ok... Г"]
        # '一' (U+4E00) is one of Data-Juicer's "other" special characters.
        assert stats("special_characters_filter", texts) == [
            14 / 61,
            29 / 34,
            2 / 12,
            0.0,
            0.0,
            10 / 12,
        ]

    def test_keep_default_range(self) -> None:
        assert kept("special_characters_filter", [SUND, PUNCT, "", None]) == [
            True,
            False,
            True,
            True,
        ]


class TestCharacterRepetition:
    def test_ratio(self) -> None:
        texts = [SUND, LETTERS, PUNCT, CJK, "", None, SIGMA, "abcd"]
        assert stats("character_repetition_filter", texts, rep_len=5) == [
            26 / 57,
            2 / 23,
            0.0,
            0.0,
            0.0,
            0.0,
            4 / 11,
            0.0,
        ]

    def test_data_juicer_case(self) -> None:
        texts = [SUND, "a v s e c s f e f g a a a a a a a a a a", PUNCT, CJK]
        assert kept("character_repetition_filter", texts, rep_len=5, max_ratio=0.4) == [
            False,
            False,
            True,
            True,
        ]

    def test_long_single_line(self) -> None:
        text = "ab" * 50_000
        # two distinct 10-grams; int(sqrt(2)) == 1, so only the larger count is summed
        assert stats("character_repetition_filter", [text]) == [49996 / 99991]

    def test_rep_len_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            get_op("character_repetition_filter")(rep_len=0)


class TestWordRepetition:
    def test_ratio(self) -> None:
        texts = [SUND, SUNDAY, "", None, "Today is Sunday Sunday Sunday and it's a happy day!"]
        assert stats("word_repetition_filter", texts, rep_len=3) == [3 / 11, 3 / 10, 0.0, 0.0, 0.0]

    def test_lower_case_uses_python_final_sigma(self) -> None:
        # "ΣΑΣ".lower() == "σας": all four words are equal, both trigrams repeat.
        assert stats("word_repetition_filter", [SIGMA], rep_len=3) == [1.0]

    def test_data_juicer_case(self) -> None:
        texts = [
            SUNDAY,
            "Today is Sunday Sunday Sunday and it's a happy day!",
            SUND,
            "plusieurs èrdash@hqbchd.ckd d'accéder à ces wwwasdasd fonc",
            "This proposed a novel proposed pretraining proposed pretraining.",
        ]
        assert kept("word_repetition_filter", texts, rep_len=3, max_ratio=0.2) == [
            False,
            True,
            False,
            True,
            True,
        ]

    def test_tokenization_rejected(self) -> None:
        with pytest.raises(ValueError, match="model download"):
            get_op("word_repetition_filter")(tokenization=True)


class TestLineLengths:
    TEXTS = [SUND, "a\r\nbb\n\nccc\n", "\u2028x\x0by\x1cz\x85", "abc\u2029", "", None, "\n"]

    def test_average(self) -> None:
        # len(text) / len(text.splitlines()); "\r\n" is one break, the text length counts breaks
        assert stats("average_line_length_filter", self.TEXTS) == [
            61.0,
            11 / 4,
            7 / 4,
            4.0,
            0.0,
            0.0,
            1.0,
        ]

    def test_maximum(self) -> None:
        assert stats("maximum_line_length_filter", self.TEXTS) == [61, 3, 1, 3, 0, 0, 0]

    def test_keep_closed_interval(self) -> None:
        texts = ["a" * 10, "a" * 9, "a" * 11]
        assert kept("maximum_line_length_filter", texts, min_len=10, max_len=10) == [
            True,
            False,
            False,
        ]
        assert kept("average_line_length_filter", texts, min_len=10, max_len=10) == [
            True,
            False,
            False,
        ]

    def test_very_long_lines(self) -> None:
        text = "x" * 200_000 + "\n" + "y" * 5
        assert stats("maximum_line_length_filter", [text]) == [200_000]
        assert stats("average_line_length_filter", [text]) == [200_006 / 2]

    def test_chunked_input(self) -> None:
        op = get_op("maximum_line_length_filter")()
        chunked = pa.chunked_array([["ab\ncd e"], ["", "xyz"]])
        assert op.compute_stats(chunked)["max_line_length"].to_pylist() == [4, 0, 3]

    @pytest.mark.parametrize("name", ["average_line_length_filter", "maximum_line_length_filter"])
    def test_range_checks(self, name: str) -> None:
        with pytest.raises(ValueError):
            get_op(name)(min_len=-1)
        with pytest.raises(ValueError):
            get_op(name)(min_len=5, max_len=4)


@pytest.mark.parametrize("seed", range(5))
def test_list_segment_max_is_each_list_s_maximum_also_on_slices_and_chunks(seed: int) -> None:
    import random

    import pyarrow.compute as pc

    from dj_runner.ops.common.textutil import list_segment_max

    rng = random.Random(seed)
    lists = [[rng.randrange(0, 1 << 31) for _ in range(rng.randint(1, 6))] for _ in range(300)]
    arr = pa.array(lists, pa.list_(pa.int64())).slice(7, 250)
    expected = [max(x) for x in lists[7:257]]
    assert list_segment_max(arr, pc.list_flatten(arr)).to_pylist() == expected
    chunked = pa.chunked_array([arr.slice(0, 100), arr.slice(100)])
    got = list_segment_max(chunked, pc.list_flatten(chunked))
    assert got.type == pa.int64() and got.to_pylist() == expected
    with pytest.raises(ValueError, match="non-empty"):
        empty_list = pa.array([[1], []], pa.list_(pa.int64()))
        list_segment_max(empty_list, pc.list_flatten(empty_list))
