"""Tasks for the local engine's worker tests: succeed, fail, or die as a killed worker does."""

from __future__ import annotations

import os
import signal
import time


def task(kind: str, value: str) -> str:
    if kind == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "raise":
        raise ValueError(value)
    if kind == "sleep":
        time.sleep(float(value))
    return value
