"""Ops for tests only: a mapper that fails on demand, a slow one, and a gate that holds a job
at a known point until the test opens it.

Loaded through DJ_RUNNER_OP_MODULES, the same way a user's custom ops are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dj_runner.ops.common.base import Mapper
from dj_runner.ops.common.registry import register


@register("flaky_mapper")
@dataclass(frozen=True, kw_only=True)
class FlakyMapper(Mapper):
    """Raises on a batch containing ``marker``, at most ``fail_times`` times in all, and
    never once ``state_dir/healed`` exists.

    Each failure appends a line to ``state_dir/failures``, shared by every process.
    """

    marker: str = "FAIL-ME"
    state_dir: str = ""
    fail_times: int = 1_000_000

    def process(self, texts: pa.Array) -> pa.Array:
        state = Path(self.state_dir)
        if (state / "healed").exists():
            return texts
        hit = pc.any(pc.match_substring(pc.fill_null(texts, ""), self.marker)).as_py()
        failures = state / "failures"
        count = len(failures.read_text().splitlines()) if failures.exists() else 0
        if not hit:
            return texts
        if len(texts) > 1:  # a batch: one failure per attempt
            if count < self.fail_times:
                with open(failures, "a") as fh:
                    fh.write(f"{os.getpid()}\n")
                raise ValueError(f"sample contains {self.marker}")
            return texts
        if 0 < count <= self.fail_times:  # the runner replaying one sample to name it
            raise ValueError(f"sample contains {self.marker}")
        return texts


@register("slow_mapper")
@dataclass(frozen=True, kw_only=True)
class SlowMapper(Mapper):
    """Leaves texts unchanged but takes ``seconds`` per call: it widens the kill window."""

    seconds: float = 0.05

    def process(self, texts: pa.Array) -> pa.Array:
        time.sleep(self.seconds)
        return texts


@register("gate_mapper")
@dataclass(frozen=True, kw_only=True)
class GateMapper(Mapper):
    """Holds each batch containing ``marker`` until ``state_dir/open`` exists, at most
    ``timeout_s`` (then fails, naming the file): a test reads a running job's state at a point
    it chose, then opens the gate. Batches without the marker pass at once."""

    marker: str = "HOLD"
    state_dir: str = ""
    timeout_s: float = 300.0

    def process(self, texts: pa.Array) -> pa.Array:
        if not pc.any(pc.match_substring(pc.fill_null(texts, ""), self.marker)).as_py():
            return texts
        gate = Path(self.state_dir) / "open"
        deadline = time.monotonic() + self.timeout_s
        while not gate.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate {gate} was not opened within {self.timeout_s} s")
            time.sleep(0.05)
        return texts
