"""The scale simulation's synthetic plan is the plan the real planner makes of such lines.

``bench/scale_sim.py`` extrapolates the planner's cost from synthetic lines fed to the
planner's own cutter; that is only worth something if it cuts exactly as ``build_plan`` does.
Here a real JSONL file with the same line lengths is planned by ``build_plan`` and compared.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from dj_runner.io.sources import list_sources
from dj_runner.plan.partitioner import build_plan
from dj_runner.recipe.parse import PartitionConfig

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def scale_sim() -> Iterator[ModuleType]:
    """``bench/scale_sim.py`` as a module; the bench modules it imports are forgotten after."""
    before = set(sys.modules)
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("scale_sim", BENCH / "scale_sim.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["scale_sim"] = module  # dataclasses resolve the module by name
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    yield module
    for name in ("scale_sim", "recovery_bench", "run_bench", "generate"):
        if name not in before:
            sys.modules.pop(name, None)


def test_line_lengths_are_deterministic_bounded_and_near_the_mean(scale_sim: ModuleType) -> None:
    a = list(scale_sim.line_lengths(5000, 100, seed=3))
    assert a == list(scale_sim.line_lengths(5000, 100, seed=3))
    assert a != list(scale_sim.line_lengths(5000, 100, seed=4))
    assert min(a) >= 50 and max(a) <= 150
    assert abs(sum(a) / len(a) - 100) < 2


def test_line_lengths_refuse_bad_arguments(scale_sim: ModuleType) -> None:
    with pytest.raises(ValueError, match="mean=1"):
        list(scale_sim.line_lengths(3, 1))


@pytest.mark.parametrize(("rows_bound", "mb_bound"), [(37, 64.0), (10_000, 0.01)])
def test_synthetic_plan_cuts_as_build_plan_does(
    scale_sim: ModuleType, tmp_path: Path, rows_bound: int, mb_bound: float
) -> None:
    samples, mean = 500, 60
    path = tmp_path / "data.jsonl"
    lengths = list(scale_sim.line_lengths(samples, mean))
    path.write_bytes(b"".join(b"x" * (n - 1) + b"\n" for n in lengths))
    real = build_plan(
        list_sources(str(path)), PartitionConfig("size", rows_bound, mb_bound, None), 1
    )
    synthetic = scale_sim.synthetic_plan(samples, mean, 1, rows_bound, mb_bound)

    def shape(plan: object) -> list[tuple[object, ...]]:
        return [
            (
                p.pid,
                p.rows,
                p.bytes,
                [(r.file, r.start, r.stop, r.first_line, r.rows) for r in p.ranges],
            )
            for p in plan.partitions  # type: ignore[attr-defined]
        ]

    assert len(real.partitions) > 1
    assert shape(synthetic) == shape(real)
    assert synthetic.sources[0].size == path.stat().st_size
    assert scale_sim.plan_json_bytes(synthetic) > 0


def test_synthetic_plan_spreads_samples_over_files(scale_sim: ModuleType) -> None:
    plan = scale_sim.synthetic_plan(1000, 50, files=3, rows_bound=400)
    assert plan.total_rows == 1000
    assert [s.path for s in plan.sources] == [f"synthetic/part-{k:05d}.jsonl" for k in range(3)]
    # A partition never spans more files than it must: ranges follow the file boundaries.
    assert {r.file for p in plan.partitions for r in p.ranges} == {0, 1, 2}
    with pytest.raises(ValueError, match="files=5"):
        scale_sim.synthetic_plan(4, 50, files=5)


def test_the_simulated_driver_runs_every_partition_through_both_stages(
    scale_sim: ModuleType, tmp_path: Path
) -> None:
    """The driver's simulation drives the executor's own stage listener and scheduler (so a
    change of their signatures breaks it here, not in the middle of ``make bench``)."""
    run = scale_sim.simulate_driver(20, 4, tmp_path, True)
    assert run["partitions"] == 20 and run["capacity"] == 8
    assert run["driver_events"] >= 20
    assert run["status_json_bytes"] and run["status_json_bytes"] > 0
