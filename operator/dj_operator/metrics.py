"""The operator's Prometheus metrics: per-job families computed at scrape time, plus health.

Per-job gauges are never kept by increments and decrements on transitions (the drift the
Spark operator's users hit after deletes and restarts). ``JobIndex`` holds the latest body
of every DataJuicerJob the operator watches, keyed by (namespace, name); handlers call
``index.upsert(body)`` on every event and ``index.remove(namespace, name)`` on deletion, and
``JobCollector`` renders the families from the index at each scrape. After an operator
restart kopf lists every job again, so the figures are right again at the first scrape, and a
finished job keeps its final figures until it is deleted.

Histograms and counters are of events this process witnessed: the index sees a job move into
Running or into a terminal phase (from another phase it saw before), and observes time to
Running, duration by result and failures by reason once per job. A job first seen already
Running (after an operator restart) is not observed again.

``OperatorMetrics`` bundles the index, the registry and the helpers the handlers call:
``reconcile(handler)`` (a context manager counting reconciles, errors and duration),
``api_request(verb, code)``, ``event_posted(type, reason)``, ``event_suppressed(reason)`` and
``watch_event(kind)``; ``instrument_api_client`` counts a kubernetes ``ApiClient``'s requests.
``start_metrics_server(port, metrics)`` serves ``/metrics``;
``serve_metrics(port)`` serves the process-wide ``default_metrics()``, the instance the
operator's handlers report to (``default_metrics().index.upsert(body)``).

Labels are bounded: namespace, job_name, phase, reason, handler, and a few small enums
(condition type and status, partition state, API verb and code). ``job_name`` rather than
``job``: Prometheus sets ``job`` on every target, and an exposed ``job`` would be renamed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from dj_operator.events_catalog import CATALOG
from dj_runner import contract

#: The phases of a DataJuicerJob, as the ``phase`` label (one-hot).
PHASES = (
    "Pending",
    "Starting",
    "Running",
    "Suspended",
    "Succeeded",
    "PartiallySucceeded",
    "Failed",
)
TERMINAL_PHASES = frozenset({"Succeeded", "PartiallySucceeded", "Failed"})
CONDITION_STATUSES = ("True", "False", "Unknown")
PARTITION_STATES = ("total", "done", "failed", "running")

#: Seconds from creation to Running: 0.5 s to 1 h.
TIME_TO_RUNNING_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Job duration: 10 s to 1 day.
DURATION_BUCKETS = (10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
#: One reconcile (one handler call): 5 ms to 1 min.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: The documented ``status.failure.reason`` values (series start at zero per namespace).
FAILURE_REASONS = (
    "InvalidSpec",
    "InvalidInput",
    "ResumeRefused",
    "RunnerFailed",
    "BackoffLimitExceeded",
    "DeadlineExceeded",
    "Stalled",
    "ClusterNotReady",
    "RecipeSourceMissing",
)


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp (``Z`` or offset) as Unix seconds; None when absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _plain(value: Any) -> Any:
    """A plain dict/list copy of a (possibly read-only, kopf) mapping."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class JobView:
    """What the metrics read from one DataJuicerJob body (and nothing else).

    The fields read: metadata.{namespace,name,uid,creationTimestamp}; spec.ray.mode;
    status.{phase,conditions,startTime,completionTime,failure.reason,attempts (a list of
    records with startTime, or a number),restarts|runnerRestarts}; status.progress in either
    of the shapes ``Progress`` reads.
    """

    namespace: str
    name: str
    uid: str
    mode: str
    phase: str
    conditions: tuple[tuple[str, str], ...]
    created_at: float | None
    started_at: float | None
    completed_at: float | None
    failure_reason: str | None
    attempt: int
    restarts: int
    partitions: dict[str, float]
    samples: dict[str, float]
    last_checkpoint_at: float | None
    last_progress_at: float | None
    eta_seconds: float | None

    @classmethod
    def of(cls, body: Mapping[str, Any], now: float) -> JobView:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        progress = Progress(status.get("progress") or {})
        phase = status.get("phase") if status.get("phase") in PHASES else "Pending"
        conditions = tuple(
            (str(c.get("type")), str(c.get("status")))
            for c in status.get("conditions") or ()
            if isinstance(c, Mapping) and c.get("type") and c.get("status") in CONDITION_STATUSES
        )
        started = parse_time(status.get("startTime")) or _transition_time(status, "Running")
        attempts = status.get("attempts")
        attempt = (
            len(attempts)
            if isinstance(attempts, list)
            else int(_number(attempts) or _number(status.get("attempt")) or 0)
        )
        restarts = _number(status.get("runnerRestarts"))
        if restarts is None:
            restarts = _number(status.get("restarts"))
        last_checkpoint = progress.time("last_checkpoint_at", "lastCheckpointTime")
        updated = progress.time("updated_at", "updateTime")
        moments = [t for t in (updated, last_checkpoint) if t is not None]
        view = cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            mode=str((spec.get("ray") or {}).get("mode") or "local"),
            phase=phase,
            conditions=conditions,
            created_at=parse_time(meta.get("creationTimestamp")),
            started_at=started,
            completed_at=parse_time(status.get("completionTime")),
            failure_reason=(
                str((status.get("failure") or {}).get("reason") or "Unknown")
                if phase == "Failed"
                else None
            ),
            attempt=attempt,
            restarts=int(restarts if restarts is not None else max(0, attempt - 1)),
            partitions=progress.partitions(),
            samples=progress.samples(),
            last_checkpoint_at=last_checkpoint,
            last_progress_at=max(moments) if moments else None,
            eta_seconds=None,
        )
        run_started = progress.time("started_at", "startTime")
        if run_started is None and isinstance(attempts, list) and attempts:
            last = attempts[-1]
            run_started = parse_time(last.get("startTime")) if isinstance(last, Mapping) else None
        return _with_eta(view, progress, run_started, now)

    @property
    def progress_ratio(self) -> float:
        total = self.partitions.get("total") or 0
        if self.phase in ("Succeeded",):
            return 1.0
        if total <= 0:
            return 0.0
        return min(1.0, (self.partitions.get("done", 0) + self.partitions.get("failed", 0)) / total)


def _transition_time(status: Mapping[str, Any], condition: str) -> float | None:
    for c in status.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == condition and c.get("status") == "True":
            return parse_time(c.get("lastTransitionTime"))
    return None


@dataclass(frozen=True)
class Progress:
    """``status.progress`` in either shape: the runner's status.json as the contract writes
    it (``partitions.done``, ``samples.in``, ``last_checkpoint_at`` ...), or the flattened
    camelCase form the progress reporter patches (``partitionsCompleted``, ``samplesIn``,
    ``lastCheckpointTime`` ...)."""

    raw: Mapping[str, Any]

    def number(self, path: tuple[str, str] | None, flat: str) -> float | None:
        if path is not None:
            outer = self.raw.get(path[0])
            if isinstance(outer, Mapping):
                value = _number(outer.get(path[1]))
                if value is not None:
                    return value
        return _number(self.raw.get(flat))

    def time(self, snake: str, camel: str) -> float | None:
        return parse_time(self.raw.get(snake)) or parse_time(self.raw.get(camel))

    def partitions(self) -> dict[str, float]:
        keys = {
            "total": "partitionsTotal",
            "done": "partitionsCompleted",
            "failed": "partitionsFailed",
            "running": "partitionsRunning",
        }
        out = {s: self.number(("partitions", s), flat) for s, flat in keys.items()}
        return {s: v for s, v in out.items() if v is not None}

    def samples(self) -> dict[str, float]:
        keys = {"in": "samplesIn", "out": "samplesOut", "rejected": "samplesRejected"}
        out = {k: self.number(("samples", k), flat) for k, flat in keys.items()}
        return {k: v for k, v in out.items() if v is not None}

    def resumed_done(self) -> float:
        return self.number(("resumed", "partitions_done"), "resumedPartitions") or 0.0

    def eta(self, now: float) -> float | None:
        """Seconds to the runner's own estimated completion time, if it gives one."""
        done_at = self.time("estimated_completion_at", "estimatedCompletionTime")
        return None if done_at is None else max(0.0, done_at - now)


def _with_eta(view: JobView, progress: Progress, run_started: float | None, now: float) -> JobView:
    """The ETA while Running: to the runner's estimated completion time if it gives one (the
    time ``kubectl describe`` and ``dj-runner status`` show), else the remaining partitions at
    the pace of this run (partitions finished since it started, resumed ones excluded)."""
    if view.phase != "Running":
        return view
    given = progress.eta(now)
    if given is not None:
        return _replace(view, eta_seconds=given)
    total = view.partitions.get("total") or 0
    done = view.partitions.get("done", 0)
    failed = view.partitions.get("failed", 0)
    if total <= 0 or run_started is None:
        return view
    finished_here = done + failed - progress.resumed_done()
    elapsed = now - run_started
    if finished_here <= 0 or elapsed <= 0:
        return view
    remaining = max(0.0, total - done - failed)
    return _replace(view, eta_seconds=remaining * elapsed / finished_here)


def _replace(view: JobView, **changes: Any) -> JobView:
    from dataclasses import replace

    return replace(view, **changes)


Transition = Callable[[JobView | None, JobView], None]


class JobIndex:
    """The latest body of every DataJuicerJob, keyed by (namespace, name); thread-safe.

    ``on_transition(old, new)`` is called on each upsert with the previous view (None when
    the job is new to this process) and the new one.
    """

    def __init__(
        self, on_transition: Transition | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._on_transition = on_transition
        self.clock = clock

    def upsert(self, body: Mapping[str, Any]) -> None:
        plain = _plain(body)
        meta = plain.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        with self._lock:
            old = self._bodies.get(key)
            self._bodies[key] = plain
        if self._on_transition is not None:
            now = self.clock()
            old_view = JobView.of(old, now) if old is not None else None
            if old_view is not None and old_view.uid != str(meta.get("uid", "")):
                old_view = None  # deleted and created again under the same name
            self._on_transition(old_view, JobView.of(plain, now))

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            self._bodies.pop((namespace, name), None)

    def replace_all(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        """Upsert every body of a full LIST and drop the jobs it no longer has (a missed
        DELETED watch event heals at the next LIST)."""
        seen = set()
        for body in bodies:
            meta = body.get("metadata") or {}
            seen.add((str(meta.get("namespace", "")), str(meta.get("name", ""))))
            self.upsert(body)
        with self._lock:
            for key in [k for k in self._bodies if k not in seen]:
                del self._bodies[key]

    def views(self) -> list[JobView]:
        now = self.clock()
        with self._lock:
            bodies = list(self._bodies.values())
        return sorted((JobView.of(b, now) for b in bodies), key=lambda v: (v.namespace, v.name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)


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
            for p in PHASES:
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
            "Handler calls that raised, by handler.",
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
        for phase in TERMINAL_PHASES:
            self.duration.labels(namespace, phase)
        for reason in FAILURE_REASONS:
            self.failures.labels(namespace, reason)

    # -- witnessed transitions
    def _on_transition(self, old: JobView | None, new: JobView) -> None:
        if new.namespace not in self._namespaces:
            self._first_in_namespace(new.namespace)
        if old is None or old.phase == new.phase:
            return
        if new.phase == "Running" and old.phase in ("Pending", "Starting"):
            origin = new.created_at
            reached = new.started_at or self._clock()
            if origin is not None:
                self.time_to_running.labels(new.namespace).observe(max(0.0, reached - origin))
        if new.phase in TERMINAL_PHASES and old.phase not in TERMINAL_PHASES:
            begin = new.started_at or new.created_at
            end = new.completed_at or self._clock()
            if begin is not None:
                self.duration.labels(new.namespace, new.phase).observe(max(0.0, end - begin))
            if new.phase == "Failed":
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
