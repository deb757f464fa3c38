"""Reading a /metrics endpoint back: samples by name and labels."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    text: str
    samples: tuple[tuple[str, tuple[tuple[str, str], ...], float], ...]

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample named ``name`` whose labels include ``labels`` (None if absent)."""
        found = [
            v
            for n, ls, v in self.samples
            if n == name and all(dict(ls).get(k) == w for k, w in labels.items())
        ]
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} samples, expected one")
        return found[0] if found else None

    def total(self, name: str, **labels: str) -> float:
        return sum(
            v
            for n, ls, v in self.samples
            if n == name and all(dict(ls).get(k) == w for k, w in labels.items())
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(ls)[label] for n, ls, _ in self.samples if n == name and label in dict(ls)}


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    samples = tuple(
        (s.name, tuple(sorted(s.labels.items())), float(s.value))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    )
    return Scrape(text, samples)
