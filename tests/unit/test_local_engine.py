"""The local engine's choices (pure): which engine a job gets, how many workers, the CPU count."""

from __future__ import annotations

import os

import pytest

from dj_runner.engine.local_backend import (
    AUTO_LOCAL_MAX_BYTES,
    INLINE_MAX_BYTES,
    INLINE_TASKS_PER_CPU,
    LocalEngine,
    choose_engine,
    default_engine,
    machine_cpus,
)
from dj_runner.errors import InvalidInput

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("engine", "ray_named", "size", "expected"),
    [
        ("auto", False, 0, "local"),
        ("auto", False, AUTO_LOCAL_MAX_BYTES, "local"),
        ("auto", False, AUTO_LOCAL_MAX_BYTES + 1, "ray"),
        ("auto", True, 10, "ray"),  # a named cluster is always used
        ("local", True, 10 * AUTO_LOCAL_MAX_BYTES, "local"),  # what the job names wins
        ("ray", False, 10, "ray"),
    ],
)
def test_choose_engine(engine: str, ray_named: bool, size: int, expected: str) -> None:
    assert choose_engine(engine, ray_named, size) == expected


def test_small_inputs_run_in_the_driver_and_larger_ones_on_at_most_one_worker_per_cpu() -> None:
    small = LocalEngine(cpus=8, input_bytes=INLINE_MAX_BYTES)
    assert small.inline(100) and small.workers(100) == INLINE_TASKS_PER_CPU * 8  # threads
    assert small.inline(3) and small.workers(3) == 3
    assert small.inline(1) and small.workers(1) == 1
    larger = LocalEngine(cpus=8, input_bytes=INLINE_MAX_BYTES + 1)
    assert not larger.inline(100) and larger.workers(100) == 8
    assert not larger.inline(3) and larger.workers(3) == 3
    assert larger.inline(1) and larger.workers(1) == 1  # one partition: no process to start
    one_cpu = LocalEngine(cpus=1, input_bytes=50 * MB)
    assert one_cpu.inline(3) and one_cpu.workers(3) == 1  # one at a time
    # Known before the plan, to start the fork server while the driver plans.
    assert larger.workers_likely
    assert not small.workers_likely and not one_cpu.workers_likely


def test_machine_cpus_counts_this_process_s_cpus() -> None:
    cpus = machine_cpus()
    assert 1 <= cpus <= len(os.sched_getaffinity(0))


def test_the_default_engine_comes_from_the_environment_and_a_bad_value_is_named() -> None:
    assert default_engine({}) == "auto"
    assert default_engine({"DJ_RUNNER_ENGINE": "ray"}) == "ray"
    assert default_engine({"DJ_RUNNER_ENGINE": " local "}) == "local"
    with pytest.raises(InvalidInput, match=r"DJ_RUNNER_ENGINE: got 'fast'; expected one of auto"):
        default_engine({"DJ_RUNNER_ENGINE": "fast"})
