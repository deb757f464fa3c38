"""Deterministic generator that scales the shared corpora to N samples for the benchmark.

It reads every ``*.jsonl`` file of the data directory (the real corpora in ``../shared/data/``)
and writes N samples, each a resampled document or a recombination of paragraph runs of a few
documents, with realistic noise injected: irregular and unusual Unicode whitespace, e-mail
addresses, links, IP addresses, typographic punctuation, repeated lines, symbol runs and
truncated fragments. A known fraction of samples are exact copies of an earlier sample, so that
``document_deduplicator`` has work.

Sample ``i`` depends only on ``(seed, i)``, so the same seed and N always give byte-identical
output, whatever the sharding. ``--text-only-out`` writes a second copy holding only ``{"text"}``:
Data-Juicer wants one schema across its input, and the corpora's ``meta`` fields differ.

    python bench/generate.py -n 100000 --out data.jsonl --text-only-out data.text.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

#: Default fraction of samples that are exact copies of an earlier sample.
DEFAULT_DUP_RATE = 0.05
#: How far back a duplicate may reach (in samples); keeps regeneration cheap.
DUP_WINDOW = 2000

_UNUSUAL_SPACES = ["\u00a0", "\u2002", "\u2003", "\u2009", "\u3000", "\u200b", "\u202f"]
_TYPO_PUNCT = [
    ('"', "\u201c"),
    ('"', "\u201d"),
    ("'", "\u2019"),
    ("--", "\u2014"),
    ("...", "\u2026"),
]
_DOMAINS = ["python.org", "example.com", "mail.python.org", "lists.example.net", "uni-example.edu"]
_LINK_HOSTS = [
    "https://docs.python.org/3.11/library",
    "http://www.example.com/docs",
    "https://bugs.python.org/issue",
]
_SYMBOL_RUNS = [
    "\u2605\u2605\u2605\u2605\u2605",
    "### ### ###",
    "$$$ !!! $$$",
    "\u25b2\u25bc\u25b2\u25bc",
    "~~~***~~~",
    "|||||||",
]


@dataclass(frozen=True)
class Doc:
    """One source document: its text, its paragraphs, its meta and the file it came from."""

    text: str
    paragraphs: tuple[str, ...]
    meta: dict[str, Any]
    source: str


def load_corpus(data_dir: Path) -> list[Doc]:
    """Every document of every ``*.jsonl`` file in ``data_dir``, in file-name then line order."""
    docs: list[Doc] = []
    files = sorted(data_dir.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no *.jsonl files in {data_dir}")
    for path in files:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                text = rec.get("text")
                if not isinstance(text, str) or not text:
                    continue
                meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
                paras = tuple(p for p in text.split("\n\n") if p.strip()) or (text,)
                docs.append(Doc(text, paras, meta, path.name))
    return docs


class Generator:
    """Builds sample ``i`` from ``(seed, i)`` alone."""

    def __init__(self, docs: list[Doc], seed: int, dup_rate: float = DEFAULT_DUP_RATE) -> None:
        self.docs = docs
        self.seed = seed
        self.dup_rate = dup_rate
        # Words taken from the corpus itself, for user names in e-mail addresses and link paths.
        words: set[str] = set()
        for d in docs[:: max(1, len(docs) // 400)]:
            for w in d.text.split():
                if w.isascii() and w.isalpha() and 3 <= len(w) <= 10:
                    words.add(w.lower())
        self.words = sorted(words) or ["user"]
        self._sample = lru_cache(maxsize=4 * DUP_WINDOW)(self._build)

    def rng(self, i: int) -> random.Random:
        return random.Random(f"{self.seed}:{i}")

    def sample(self, i: int) -> tuple[str, dict[str, Any]]:
        """The text and meta of sample ``i``."""
        return self._sample(i)

    def _build(self, i: int) -> tuple[str, dict[str, Any]]:
        rng = self.rng(i)
        if i > 0 and rng.random() < self.dup_rate:
            j = rng.randrange(max(0, i - DUP_WINDOW), i)
            text, meta = self.sample(j)
            return text, {**meta, "gen": {"id": i, "kind": "duplicate", "of": j}}
        kind_roll = rng.random()
        base = rng.choice(self.docs)
        if kind_roll < 0.35:
            kind = "resample"
            text = base.text
        else:
            kind = "recombine"
            parts = [self._window(rng, base)]
            for _ in range(rng.randint(1, 3)):
                parts.append(self._window(rng, rng.choice(self.docs)))
            text = "\n\n".join(parts)
        text, noise = self._noise(rng, text)
        meta = {**base.meta, "gen": {"id": i, "kind": kind, "src": base.source, "noise": noise}}
        return text, meta

    @staticmethod
    def _window(rng: random.Random, doc: Doc) -> str:
        n = len(doc.paragraphs)
        start = rng.randrange(n)
        length = rng.randint(1, min(6, n - start))
        return "\n\n".join(doc.paragraphs[start : start + length])

    def _noise(self, rng: random.Random, text: str) -> tuple[str, list[str]]:
        applied: list[str] = []
        if rng.random() < 0.30:
            applied.append("whitespace")
            text = self._whitespace(rng, text)
        if rng.random() < 0.15:
            applied.append("email")
            user = f"{rng.choice(self.words)}.{rng.choice(self.words)}"
            text = self._insert(rng, text, f"Contact {user}@{rng.choice(_DOMAINS)} for details.")
        if rng.random() < 0.20:
            applied.append("link")
            url = f"{rng.choice(_LINK_HOSTS)}/{rng.choice(self.words)}.html"
            text = self._insert(rng, text, f"See {url} for more.")
        if rng.random() < 0.08:
            applied.append("ip")
            ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
            text = self._insert(
                rng, text, f"The server listens on {ip}:{rng.randint(1024, 65535)}."
            )
        if rng.random() < 0.15:
            applied.append("punctuation")
            for plain, fancy in rng.sample(_TYPO_PUNCT, 2):
                text = text.replace(plain, fancy)
        if rng.random() < 0.05:
            applied.append("repetition")
            lines = text.split("\n")
            line = rng.choice(lines) or text[:80]
            text = text + ("\n" + line) * rng.randint(5, 30)
        if rng.random() < 0.04:
            applied.append("symbols")
            run = rng.choice(_SYMBOL_RUNS)
            text = " ".join([run] * rng.randint(3, 12)) + "\n" + text
        if rng.random() < 0.06:
            applied.append("truncate")
            text = text[: rng.randint(5, 60)]
        return text, applied

    @staticmethod
    def _whitespace(rng: random.Random, text: str) -> str:
        chars = list(text)
        for _ in range(rng.randint(1, 8)):
            if not chars:
                break
            k = rng.randrange(len(chars))
            if chars[k] == " ":
                chars[k] = rng.choice([*_UNUSUAL_SPACES, "  ", "   "])
        out = "".join(chars)
        return rng.choice(["", " ", "\t", "\u3000"]) + out + rng.choice(["", " ", "  \n", "\u00a0"])

    @staticmethod
    def _insert(rng: random.Random, text: str, sentence: str) -> str:
        paras = text.split("\n\n")
        k = rng.randrange(len(paras))
        paras[k] = f"{paras[k]} {sentence}" if rng.random() < 0.5 else f"{sentence} {paras[k]}"
        return "\n\n".join(paras)

    def samples(self, n: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
        for i in range(n):
            text, meta = self.sample(i)
            yield i, text, meta


def shard_paths(out: Path, shards: int) -> list[Path]:
    """``out`` itself for one shard; ``out/part-00000.jsonl``... for several."""
    if shards <= 1:
        return [out]
    return [out / f"part-{k:05d}.jsonl" for k in range(shards)]


def generate(
    data_dir: Path,
    n: int,
    out: Path,
    *,
    seed: int = 0,
    shards: int = 1,
    text_only_out: Path | None = None,
    dup_rate: float = DEFAULT_DUP_RATE,
) -> dict[str, Any]:
    """Write N samples to ``out`` (and a text-only copy); return a manifest of what was written.

    With ``shards > 1``, ``out`` is a directory and sample ``i`` goes to shard ``i * shards // n``,
    so reading the shards in name order gives the samples in order.
    """
    gen = Generator(load_corpus(data_dir), seed, dup_rate)
    targets = [out] + ([text_only_out] if text_only_out else [])
    for t in targets:
        if shards > 1:
            t.mkdir(parents=True, exist_ok=True)
        else:
            t.parent.mkdir(parents=True, exist_ok=True)
    full_paths = shard_paths(out, shards)
    text_paths = shard_paths(text_only_out, shards) if text_only_out else []
    digest = hashlib.sha256()
    seen: set[bytes] = set()
    injected = 0
    total_chars = 0
    shard = -1
    fh_full = fh_text = None
    try:
        for i, text, meta in gen.samples(n):
            k = i * shards // n if shards > 1 else 0
            if k != shard:
                for fh in (fh_full, fh_text):
                    if fh is not None:
                        fh.close()
                shard = k
                fh_full = full_paths[k].open("w", encoding="utf-8")
                fh_text = text_paths[k].open("w", encoding="utf-8") if text_paths else None
            line = json.dumps({"text": text, "meta": meta}, ensure_ascii=False) + "\n"
            assert fh_full is not None
            fh_full.write(line)
            digest.update(line.encode("utf-8"))
            if fh_text is not None:
                fh_text.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            seen.add(hashlib.md5(text.encode("utf-8")).digest())
            injected += meta["gen"]["kind"] == "duplicate"
            total_chars += len(text)
    finally:
        for fh in (fh_full, fh_text):
            if fh is not None:
                fh.close()
    return {
        "n": n,
        "seed": seed,
        "shards": shards,
        "dup_rate": dup_rate,
        "source_docs": len(gen.docs),
        "injected_duplicates": injected,
        "distinct_texts": len(seen),
        "exact_duplicates": n - len(seen),
        "mean_chars": total_chars / n if n else 0.0,
        "sha256": digest.hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--num-samples", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="JSONL file (a directory if --shards>1)")
    p.add_argument("--text-only-out", type=Path, help="also write a {'text'}-only copy here")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--dup-rate", type=float, default=DEFAULT_DUP_RATE)
    a = p.parse_args(argv)
    if a.num_samples <= 0:
        p.error("--num-samples must be positive")
    manifest = generate(
        a.data_dir,
        a.num_samples,
        a.out,
        seed=a.seed,
        shards=a.shards,
        text_only_out=a.text_only_out,
        dup_rate=a.dup_rate,
    )
    json.dump(manifest, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
