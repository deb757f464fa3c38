"""What a piece of work costs the process that runs it: CPU time and peak memory (RSS).

``Span()`` starts a measurement; ``Span.end()`` returns the ``Usage`` since. CPU time is the
process's (every thread: the op and the checkpoint commit running beside it, Arrow's pools).
Peak RSS is the process's high-water mark: on Linux a span resets it first (``clear_refs``)
and reads ``VmHWM`` at its end, so it is the peak during the span; where that cannot be reset
(other systems, a restricted ``/proc``) it is the process's peak so far (``ru_maxrss``).
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc/self")


@dataclass(frozen=True)
class Usage:
    """CPU seconds and peak resident bytes of a span of work."""

    cpu_time_s: float = 0.0
    peak_rss_bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        """Spans one after the other: CPU adds up, the peak is the larger."""
        return Usage(
            self.cpu_time_s + other.cpu_time_s, max(self.peak_rss_bytes, other.peak_rss_bytes)
        )


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux ``clear_refs`` 5); whether it did."""
    with contextlib.suppress(OSError):
        (_PROC / "clear_refs").write_text("5")
        return True
    return False


def _hwm_bytes() -> int | None:
    """``VmHWM`` of ``/proc/self/status`` in bytes, or None where there is none."""
    with contextlib.suppress(OSError, ValueError):
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes() -> int:
    """The process's peak RSS (since the last reset where one is possible), in bytes."""
    hwm = _hwm_bytes()
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux and BSDs: KiB


class Span:
    """One measurement: started at construction, read by ``end``."""

    def __init__(self) -> None:
        _reset_peak()
        self._cpu = time.process_time()

    def end(self) -> Usage:
        return Usage(round(time.process_time() - self._cpu, 6), peak_rss_bytes())


#: The resource fields of ``partition_complete`` and ``job_complete`` events; the peak is the
#: larger of two, the rest add up (``add``).
RESOURCE_FIELDS = (
    "cpu_time_s",
    "peak_rss_bytes",
    "bytes_read",
    "bytes_written",
    "checkpoint_bytes",
)
_PEAKS = frozenset({"peak_rss_bytes"})


def add(total: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """Two pieces of work's resource fields combined: sums, and the larger peak."""
    out = dict(total)
    for key in RESOURCE_FIELDS:
        a, b = total.get(key, 0), more.get(key, 0)
        out[key] = max(a, b) if key in _PEAKS else a + b
    out["cpu_time_s"] = round(out["cpu_time_s"], 6)
    return out
