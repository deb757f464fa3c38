"""The operator's Prometheus metrics: per-job families computed at scrape time, plus health.

Per-job gauges are never kept by increments and decrements on transitions (the drift the
Spark operator's users hit after deletes and restarts). The job index
(``dj_operator.status.reader.JobIndex``) holds the latest body of every DataJuicerJob the
operator watches and reads it into a ``JobView``; ``JobCollector`` renders the families from
the index at each scrape. After an operator restart kopf lists every job again, so the figures
are right again at the first scrape, and a finished job keeps its final figures until it is
deleted or for an hour after it finished, whichever comes first (``JobIndex.finished_ttl``: the
per-job series stay bounded by the jobs live or recently done).

Histograms and counters are of events this process witnessed: the index sees a job move into
Running or into a terminal phase (from another phase it saw before), and observes time to
Running, duration by result and failures by reason once per job. A job first seen already
Running (after an operator restart) is not observed again. The phase-duration histogram
(``datajuicer_job_phase_interval_seconds``: apply -> pod created -> Ray ready -> first
checkpoint -> finished, by mode) observes an interval when the index sees its end milestone newly
recorded in the job's status (``dj_operator.status.timeline``): once per job, and never again
after an operator restart, since the milestones are facts of the status, not of this process.

``OperatorMetrics`` bundles the index, the registry and the helpers the handlers call:
``reconcile(handler)`` (a context manager counting reconciles, errors and duration),
``api_request(verb, code)``, ``event_posted(type, reason)``, ``event_suppressed(reason)`` and
``watch_event(kind)``; ``instrument_api_client`` counts a kubernetes ``ApiClient``'s requests.
``start_metrics_server(port, metrics)`` serves ``/metrics``;
``serve_metrics(port)`` serves the process-wide ``default_metrics()``, the instance the
operator's handlers report to (``default_metrics().index.upsert(body)``).

Labels are bounded: namespace, job_name, phase, reason, handler, and a few small enums
(condition type and status, partition state, API verb and code, Ray mode, the seven
``timeline.INTERVALS``). ``job_name`` rather than
``job``: Prometheus sets ``job`` on every target, and an exposed ``job`` would be renamed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from dj_operator.api import constants as c
from dj_operator.events_catalog import CATALOG
from dj_operator.status import timeline
from dj_operator.status.reader import CONDITION_STATUSES, JobIndex, JobView
from dj_runner import contract

PARTITION_STATES = ("total", "done", "failed", "running")

#: Seconds from creation to Running: 0.5 s to 1 h.
TIME_TO_RUNNING_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Job duration: 10 s to 1 day.
DURATION_BUCKETS = (10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
#: Between two startup milestones: 0.5 s to 1 day.
PHASE_INTERVAL_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)
#: One reconcile (one handler call): 5 ms to 1 min.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class JobCollector(Collector):
    """Per-job gauges, computed from the index at scrape time."""

    def __init__(self, index: JobIndex) -> None:
        self.index = index

    def collect(self) -> Iterator[Metric]:
        views = self.index.views()
        keys = ["namespace", "job_name"]

        def family(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*keys, *extra])

        info = family("datajuicer_job_info", "A DataJuicerJob the operator tracks.", ("mode",))
        phase = family(
            "datajuicer_job_phase", "The job's phase, one-hot: 1 for the current one.", ("phase",)
        )
        condition = family(
            "datajuicer_job_condition",
            "The job's conditions, one-hot over True/False/Unknown per type.",
            ("type", "status"),
        )
        failure = family(
            "datajuicer_job_failure", "1 for a Failed job, labelled with its reason.", ("reason",)
        )
        ratio = family(
            "datajuicer_job_progress_ratio", "Partitions finished (done or failed) / total, 0-1."
        )
        partitions = family(
            "datajuicer_job_partitions", "The job's partitions by state.", ("state",)
        )
        samples_in = family("datajuicer_job_input_samples", "Input samples of partitions done.")
        samples_out = family(
            "datajuicer_job_output_samples", "Samples kept by the partitions done (final at end)."
        )
        rejected = family("datajuicer_job_rejected_samples", "Malformed input records set aside.")
        eta = family(
            "datajuicer_job_eta_seconds", "Estimated seconds to completion, while Running."
        )
        attempt = family("datajuicer_job_attempt", "The runner attempt number (1 for the first).")
        restarts = family("datajuicer_job_restarts", "Runner restarts of the job.")
        created = family(
            "datajuicer_job_created_timestamp_seconds", "When the job was created, Unix time."
        )
        started = family(
            "datajuicer_job_start_timestamp_seconds", "When the job first ran, Unix time."
        )
        completed = family(
            "datajuicer_job_completion_timestamp_seconds", "When the job finished, Unix time."
        )
        checkpoint = family(
            "datajuicer_job_last_checkpoint_timestamp_seconds",
            "When the runner last committed a checkpoint, Unix time.",
        )
        progressed = family(
            "datajuicer_job_last_progress_timestamp_seconds",
            "When the runner last reported progress (a partition, a stage or a checkpoint).",
        )
        for v in views:
            base = [v.namespace, v.name]
            info.add_metric([*base, v.mode], 1)
            for p in c.PHASES:  # the ``phase`` label, one-hot
                phase.add_metric([*base, p], 1.0 if p == v.phase else 0.0)
            for ctype, cstatus in v.conditions:
                for s in CONDITION_STATUSES:
                    condition.add_metric([*base, ctype, s], 1.0 if s == cstatus else 0.0)
            if v.failure_reason is not None:
                failure.add_metric([*base, v.failure_reason], 1)
            ratio.add_metric(base, v.progress_ratio)
            for state in PARTITION_STATES:
                partitions.add_metric([*base, state], v.partitions.get(state, 0.0))
            samples_in.add_metric(base, v.samples.get("in", 0.0))
            samples_out.add_metric(base, v.samples.get("out", 0.0))
            rejected.add_metric(base, v.samples.get("rejected", 0.0))
            attempt.add_metric(base, v.attempt)
            restarts.add_metric(base, v.restarts)
            for fam, value in (
                (eta, v.eta_seconds),
                (created, v.created_at),
                (started, v.started_at),
                (completed, v.completed_at),
                (checkpoint, v.last_checkpoint_at),
                (progressed, v.last_progress_at),
            ):
                if value is not None:
                    fam.add_metric(base, value)
        tracked = GaugeMetricFamily(
            "datajuicer_operator_tracked_jobs", "DataJuicerJobs in the operator's index."
        )
        tracked.add_metric([], len(views))
        yield from (
            info,
            phase,
            condition,
            failure,
            ratio,
            partitions,
            samples_in,
            samples_out,
            rejected,
            eta,
            attempt,
            restarts,
            created,
            started,
            completed,
            checkpoint,
            progressed,
            tracked,
        )


class OperatorMetrics:
    """The operator's registry: the job index's collector and the health instruments.

    Labelled series start at zero before their first event, so that a ``rate`` sees the
    first event too: per namespace when the index first sees a job there, per handler for
    the ``handlers`` named here (others at their first call), per published Event reason.
    """

    def __init__(
        self, clock: Callable[[], float] = time.time, handlers: tuple[str, ...] = ()
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.index = JobIndex(on_transition=self._on_transition, clock=clock)
        self.index.metrics = self  # type: ignore[attr-defined]
        self.registry.register(JobCollector(self.index))
        r = self.registry
        self.time_to_running = Histogram(
            "datajuicer_job_time_to_running_seconds",
            "Seconds from a job's creation to its first Running, witnessed by this operator.",
            ["namespace"],
            buckets=TIME_TO_RUNNING_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "datajuicer_job_duration_seconds",
            "Seconds from a job's start to its end, by final phase.",
            ["namespace", "phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.phase_intervals = Histogram(
            "datajuicer_job_phase_interval_seconds",
            "Seconds between consecutive startup milestones of a job (apply, pod created, Ray"
            " ready, first checkpoint, finished), in the order its mode reaches them.",
            ["namespace", "mode", "interval"],
            buckets=PHASE_INTERVAL_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            "datajuicer_job_failures",
            "Jobs that ended Failed, by failure reason.",
            ["namespace", "reason"],
            registry=r,
        )
        self.reconciles = Counter(
            "datajuicer_operator_reconciles", "Handler calls, by handler.", ["handler"], registry=r
        )
        self.reconcile_errors = Counter(
            "datajuicer_operator_reconcile_errors",
            "Handler calls that raised, or whose create the API server refused, by handler.",
            ["handler"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "datajuicer_operator_reconcile_duration_seconds",
            "Time one handler call took, by handler.",
            ["handler"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.api_requests = Counter(
            "datajuicer_operator_api_requests",
            "Kubernetes API requests made by the operator, by verb and HTTP status code.",
            ["verb", "code"],
            registry=r,
        )
        self.events_posted = Counter(
            "datajuicer_operator_events_posted",
            "Kubernetes Events created or bumped, by type and reason.",
            ["type", "reason"],
            registry=r,
        )
        self.events_suppressed = Counter(
            "datajuicer_operator_events_suppressed",
            "Kubernetes Events dropped by the per-object rate limit, by reason.",
            ["reason"],
            registry=r,
        )
        self.watch_last_event = Gauge(
            "datajuicer_operator_watch_last_event_timestamp_seconds",
            "When the operator last received a watch event, by resource kind (Unix time).",
            ["kind"],
            registry=r,
        )
        self._clock = clock
        self._namespaces: set[str] = set()
        for entry in CATALOG.values():  # the published reasons: their series start at zero
            self.events_posted.labels(entry.type, entry.name)
            self.events_suppressed.labels(entry.name)
        for handler in handlers:
            self.reconciles.labels(handler)
            self.reconcile_errors.labels(handler)
            self.reconcile_duration.labels(handler)

    def _first_in_namespace(self, namespace: str) -> None:
        self._namespaces.add(namespace)
        self.time_to_running.labels(namespace)
        for phase in c.TERMINAL_PHASES:
            self.duration.labels(namespace, phase)
        for reason in c.FAILURE_REASONS:  # the documented reasons: series start at zero
            self.failures.labels(namespace, reason)
        for mode in (c.MODE_LOCAL, c.MODE_KUBERAY):
            for interval in timeline.mode_intervals(mode):
                self.phase_intervals.labels(namespace, mode, interval)

    # -- witnessed transitions
    def _on_transition(self, old: JobView | None, new: JobView) -> None:
        if new.namespace not in self._namespaces:
            self._first_in_namespace(new.namespace)
        if old is None:
            return
        completed = (
            timeline.new_intervals(new.mode, old.milestones, new.milestones)
            if new.mode in timeline.ORDER  # a bounded label: an invalid spec's mode is not one
            else {}
        )
        for interval, seconds in completed.items():
            self.phase_intervals.labels(new.namespace, new.mode, interval).observe(seconds)
        if old.phase == new.phase:
            return
        if new.phase == c.RUNNING and old.phase in (c.PENDING, c.STARTING):
            origin = new.created_at
            reached = new.started_at or self._clock()
            if origin is not None:
                self.time_to_running.labels(new.namespace).observe(max(0.0, reached - origin))
        if new.phase in c.TERMINAL_PHASES and old.phase not in c.TERMINAL_PHASES:
            begin = new.started_at or new.created_at
            end = new.completed_at or self._clock()
            if begin is not None:
                self.duration.labels(new.namespace, new.phase).observe(max(0.0, end - begin))
            if new.phase == c.FAILED:
                self.failures.labels(new.namespace, new.failure_reason or "Unknown").inc()

    # -- helpers for the handlers and the kube module
    @contextmanager
    def reconcile(self, handler: str) -> Iterator[None]:
        """Count and time one handler call; an exception counts as an error and propagates."""
        self.reconcile_errors.labels(handler)  # the series exists, at zero, from the first call
        self.reconciles.labels(handler).inc()
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.reconcile_errors.labels(handler).inc()
            raise
        finally:
            self.reconcile_duration.labels(handler).observe(time.perf_counter() - start)

    def reconcile_error(self, handler: str) -> None:
        """Count an error a handler handled itself (a create the API server refused)."""
        self.reconcile_errors.labels(handler).inc()

    def api_request(self, verb: str, code: int | str) -> None:
        self.api_requests.labels(verb, str(code)).inc()

    def event_posted(self, type_: str, reason: str) -> None:
        self.events_posted.labels(type_, reason).inc()

    def event_suppressed(self, reason: str) -> None:
        self.events_suppressed.labels(reason).inc()

    def watch_event(self, kind: str = contract.KIND) -> None:
        self.watch_last_event.labels(kind).set(self._clock())


def instrument_api_client(api_client: Any, metrics: OperatorMetrics) -> Any:
    """Count every request of a ``kubernetes.client.ApiClient`` by HTTP verb and status code.

    Wraps its REST client's ``request``: a response counts its status, an ``ApiException``
    its status, anything else (a connection error, a timeout) ``code="error"``. Requests kopf
    makes itself (watches, its own patches) go through aiohttp and are not counted.
    """
    from kubernetes.client.exceptions import ApiException

    rest = api_client.rest_client
    send = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        verb = str(method).lower()
        try:
            response = send(method, url, *args, **kwargs)
        except ApiException as exc:
            metrics.api_request(verb, exc.status or "error")
            raise
        except Exception:
            metrics.api_request(verb, "error")
            raise
        metrics.api_request(verb, response.status)
        return response

    rest.request = request
    return api_client


@dataclass(frozen=True)
class MetricsServer:
    """A running ``/metrics`` endpoint; ``close`` stops it."""

    host: str
    port: int
    metrics: OperatorMetrics
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout: float = 10.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def start_metrics_server(
    port: int, source: OperatorMetrics | JobIndex, host: str = "0.0.0.0"
) -> MetricsServer:
    """Serve the operator's metrics on ``host:port`` (0: any free port)."""
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics port: {port!r} is not a TCP port; use 1-65535, or 0 for any")
    metrics = source if isinstance(source, OperatorMetrics) else getattr(source, "metrics", None)
    if not isinstance(metrics, OperatorMetrics):
        raise TypeError("start_metrics_server needs an OperatorMetrics or its .index")
    server, thread = start_http_server(int(port), addr=host, registry=metrics.registry)
    return MetricsServer(host, int(server.server_port), metrics, server, thread)


_default: OperatorMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> OperatorMetrics:
    """The operator process's metrics: the one instance its handlers and kube module report to."""
    global _default
    with _default_lock:
        if _default is None:
            _default = OperatorMetrics()
        return _default


def serve_metrics(port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve the process's ``default_metrics()`` (what ``dj-operator run --metrics-port`` calls)."""
    return start_metrics_server(port, default_metrics(), host)
