"""document_deduplicator: Data-Juicer's md5 hash of the (optionally normalised) text."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from dj_runner.ops.common.registry import get_op

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
HELLO_MD5 = "5d41402abc4b2a76b9719d911017c592"


def hashes(texts: list[str | None], **params: object) -> list[str]:
    out = get_op("document_deduplicator")(**params).compute_hash(pa.array(texts, pa.string()))
    assert out.type == pa.string()
    assert out.null_count == 0
    return out.to_pylist()


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def test_known_digests_and_strip() -> None:
    assert hashes(["hello", "", None, "  hello\n\u00a0", "\u200bhello"]) == [
        HELLO_MD5,
        EMPTY_MD5,
        EMPTY_MD5,
        HELLO_MD5,  # str.strip() removes NBSP ...
        md5("\u200bhello"),  # ... but not a zero-width space
    ]


def test_case_sensitive_by_default() -> None:
    a, b = hashes(["Hello", "hello"])
    assert a != b
    assert hashes(["Hello", "HELLO"], lowercase=True) == [HELLO_MD5, HELLO_MD5]


def test_lowercase_is_python_lower() -> None:
    # "İ".lower() is "i̇" (two code points), not "i"
    assert hashes(["İ"], lowercase=True) == [md5("i\u0307")]


def test_ignore_non_character() -> None:
    texts = [
        "Hello, World! 123",
        "hello world",
        "He\u3000llo\u00a0Wor\u0663ld",  # ideographic space, NBSP, Arabic-Indic digit
        "CJK：中文，",  # fullwidth punctuation is not string.punctuation
        "\x1cab\x1c",  # not White_Space, but str.isspace: stripped at the ends only
    ]
    assert hashes(texts, ignore_non_character=True) == [
        md5("HelloWorld"),
        md5("helloworld"),
        md5("HelloWorld"),
        md5("CJK：中文，"),
        md5("ab"),
    ]
    assert hashes(texts[:2], lowercase=True, ignore_non_character=True) == [md5("helloworld")] * 2


def test_is_global() -> None:
    assert get_op("document_deduplicator").is_global is True
