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


def models_loaded(kind: str, value: str) -> str:
    """Which of language_id_score_filter's models this worker process has at the task's start
    (the fork server's warm-up, if any, loaded them before the fork)."""
    from dj_runner.ops import language_id_score_filter as langid

    return f"fasttext={langid._MODEL is not None} native={langid._NATIVE_FILE is not None}"
