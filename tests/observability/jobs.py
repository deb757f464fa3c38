"""A small real job for the observability tests: 6 partitions, one retried, one filter, a dedup."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dj_runner.engine.executor import Executor, JobResult
from dj_runner.recipe.parse import Recipe, parse_recipe

from .conftest import DEMO

#: The ops of the small job; ``flaky_mapper`` fails once, so exactly one partition retries.
OPS = (
    "whitespace_normalization_mapper",
    "flaky_mapper",
    "text_length_filter",
    "document_deduplicator",
)


@dataclass(frozen=True)
class SmallJob:
    recipe: Recipe
    dataset: Path
    work_dir: Path


def small_job(
    tmp: Path,
    partition_size: int = 37,
    slow_seconds: float = 0.0,
    event_logging: dict[str, Any] | None = None,
) -> SmallJob:
    """The demo corpus with one sample that fails ``flaky_mapper`` once, as a recipe.

    ``slow_seconds`` > 0 adds a ``slow_mapper`` first, so partitions finish over several
    seconds (a scraper then sees the counters move between its scrapes). ``event_logging``
    is the recipe's block of that name.
    """
    rows = [json.loads(line) for line in DEMO.read_text().splitlines() if line.strip()]
    rows[50]["text"] = "this sample will FAIL-ME once, then pass on the retry " * 2
    dataset = tmp / "input.jsonl"
    dataset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    state = tmp / "flaky-state"
    state.mkdir()
    recipe = parse_recipe(
        {
            "project_name": "metrics",
            "dataset_path": str(dataset),
            "export_path": str(tmp / "out.jsonl"),
            "partition_size": partition_size,
            "retry_base_delay_s": 0.05,
            "max_retries": 2,
            "event_logging": event_logging,
            "process": [
                *([{"slow_mapper": {"seconds": slow_seconds}}] if slow_seconds > 0 else []),
                {"whitespace_normalization_mapper": {}},
                {"flaky_mapper": {"state_dir": str(state), "fail_times": 1}},
                {"text_length_filter": {"min_len": 20, "max_len": 20000}},
                {"document_deduplicator": {"lowercase": True}},
            ],
        }
    )
    return SmallJob(recipe, dataset, tmp / "work")


def run_job(job: SmallJob, job_id: str = "metrics-demo") -> JobResult:
    return Executor(job.recipe, work_dir=job.work_dir, job_id=job_id).run()
