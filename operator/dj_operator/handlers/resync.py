"""The resync loop: every few seconds, reconcile every job that is not finished (and finished
jobs with a TTL). It catches deadlines, TTLs and any watch event that was missed."""

from __future__ import annotations

import fnmatch
import logging
import threading
import time

from dj_operator.api import constants as c
from dj_operator.api.types import BUILTIN_DEFAULTS, OperatorDefaults
from dj_operator.handlers import reconcile as rec
from dj_operator.kube import Kube
from dj_operator.metrics import default_metrics

log = logging.getLogger(__name__)


class Resync(threading.Thread):
    def __init__(
        self,
        kube: Kube,
        namespaces: tuple[str, ...],
        interval: float,
        defaults: OperatorDefaults = BUILTIN_DEFAULTS,
    ) -> None:
        super().__init__(name="dj-resync", daemon=True)
        self.kube = kube
        # kopf accepts globs; the resync then lists every namespace and keeps the matches.
        self.patterns = namespaces
        globbed = any(ch in ns for ns in namespaces for ch in "*?[!")
        self.namespaces: tuple[str | None, ...] = (
            (None,) if globbed or not namespaces else namespaces
        )
        self.interval = interval
        self.defaults = defaults
        self.jobs_seen = 0
        self._stop = threading.Event()
        self._last_pass = time.monotonic()

    def seconds_since_pass(self) -> float:
        return time.monotonic() - self._last_pass

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.pass_once()
                self._last_pass = time.monotonic()
            except Exception:
                log.exception("resync pass failed; retrying in %.0f s", self.interval)

    def pass_once(self) -> None:
        seen = 0
        for namespace in self.namespaces:
            for job in self.kube.list_jobs(namespace):
                seen += 1
                status = job.get("status") or {}
                meta = job["metadata"]
                if self.patterns and not any(
                    fnmatch.fnmatchcase(meta["namespace"], p) for p in self.patterns
                ):
                    continue
                finished = status.get("phase") in c.TERMINAL_PHASES
                if finished and (job.get("spec") or {}).get("ttlSecondsAfterFinished") is None:
                    continue
                # A suspended job has no clock running: its pod and spec events wake it.
                settled = status.get("observedGeneration") == meta.get("generation")
                if status.get("phase") == c.SUSPENDED and settled:
                    continue
                if meta.get("deletionTimestamp"):
                    continue
                try:
                    with default_metrics().reconcile("resync"):
                        rec.reconcile(self.kube, meta["namespace"], meta["name"], self.defaults)
                except Exception:
                    log.exception("resync of %s/%s failed", meta["namespace"], meta["name"])
                if self._stop.is_set():
                    return
        self.jobs_seen = seen
