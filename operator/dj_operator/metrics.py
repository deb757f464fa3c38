"""Prometheus metrics of the operator, computed at scrape time from a LIST (restart-safe)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dj_operator.api import constants as c


class JobCollector(Collector):
    """datajuicer_job_phase (one-hot), datajuicer_job_restarts, datajuicer_job_partitions."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from dj_operator.handlers.kopf_handlers import State

        phase = GaugeMetricFamily(
            "datajuicer_job_phase",
            "1 for the job's current phase",
            labels=["namespace", "name", "phase"],
        )
        restarts = GaugeMetricFamily(
            "datajuicer_job_restarts", "Runner restarts of the job", labels=["namespace", "name"]
        )
        parts = GaugeMetricFamily(
            "datajuicer_job_partitions",
            "Partitions by state",
            labels=["namespace", "name", "state"],
        )
        kube = State.kube
        if kube is not None:
            for namespace in State.namespaces or (None,):
                for job in kube.list_jobs(namespace):
                    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
                    status = job.get("status") or {}
                    current = status.get("phase") or c.PENDING
                    for p in c.PHASES:
                        phase.add_metric([ns, name, p], 1.0 if p == current else 0.0)
                    restarts.add_metric([ns, name], float(status.get("restarts") or 0))
                    progress = status.get("progress") or {}
                    for state, key in (
                        ("total", "partitionsTotal"),
                        ("completed", "partitionsCompleted"),
                        ("failed", "partitionsFailed"),
                    ):
                        parts.add_metric([ns, name, state], float(progress.get(key) or 0))
        yield phase
        yield restarts
        yield parts


def serve_metrics(port: int) -> None:
    REGISTRY.register(JobCollector())
    start_http_server(port)
