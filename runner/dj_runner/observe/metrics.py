"""The runner's Prometheus endpoint: figures from the job's status file and its event log.

``serve_metrics(work_dir, port)`` starts an HTTP server for ``/metrics`` and two threads. One
polls ``<work_dir>/status.json``, which the driver always writes whatever the event log's
settings: the phase, the job id, the partitions planned, completed and failed and the last
checkpoint come from it, so they hold with ``event_logging.log_level: WARNING`` or the log
disabled. The other follows ``<work_dir>/events`` (``dj_runner.observe.event_log.follow_events``):
every process of the job appends to that one log (the driver and each Ray task, in-process or
on other Ray nodes that mount the same volume), so following it aggregates what the tasks
report (per-op samples and durations, checkpoint sizes, retries) without any channel between
them and the driver; those families need the events they count (the default level, INFO).
When both sources report a figure, the larger count wins, so a counter never goes back.

Counters cover this runner process only: events older than the call are skipped, so a
restarted runner starts its counters at zero and Prometheus' reset handling (``rate``,
``increase``) keeps the sums right across restarts. The families are rendered at scrape time
from ``RunnerFigures``; its ``apply`` is pure and tested on its own.

Labels are bounded: ``namespace`` and ``job_name`` (constant per process), ``op`` (an op of
the recipe), ``type`` (an event type of the published set) and ``phase`` (the runner's state).
Never a partition id, a sample or a pod name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from dj_runner import __version__, contract
from dj_runner.errors import RunnerError
from dj_runner.observe.event_log import EVENT_TYPES, Event, follow_events
from dj_runner.observe.status_file import parse_rfc3339, read_status
from dj_runner.store.blobs import open_blobs
from dj_runner.store.checkpoint import COMMITS
from dj_runner.store.workdir import WorkDir

log = logging.getLogger(__name__)

#: The runner's states, as the ``phase`` label of ``datajuicer_runner_phase``.
RUNNER_PHASES = ("starting", "running", "succeeded", "partially_succeeded", "failed")

#: Op and checkpoint write durations, seconds: 1 ms to about 17 minutes.
DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 1000)
#: How often the status follower measures the work dir's size on disk (a directory walk).
WORK_DIR_SIZE_INTERVAL_S = 15.0
#: Checkpoint sizes, bytes: 1 KiB to 16 GiB, by factors of 4.
SIZE_BUCKETS = tuple(float(1024 * 4**i) for i in range(13))


@dataclass
class Histogram:
    """Cumulative bucket counts and a sum, as a Prometheus histogram holds them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.total += value
        self.observations += 1
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1

    def buckets(self) -> list[tuple[str, float]]:
        out = [(_float_label(b), float(c)) for b, c in zip(self.bounds, self.counts, strict=True)]
        out.append(("+Inf", float(self.observations)))
        return out


def _float_label(value: float) -> str:
    return repr(float(value))


@dataclass
class RunnerFigures:
    """What the event log has said since ``since``: counters, gauges and histograms.

    ``apply`` takes one event at a time; ``plan_bytes`` maps a partition id to its input
    bytes (from the plan) so that a partition read from its source adds to the bytes read.
    """

    since: float = 0.0
    job_id: str = ""
    phase: str = "starting"
    started_at: float | None = None
    last_event_at: float | None = None
    last_checkpoint_at: float | None = None
    partitions_planned: int | None = None
    events: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("started", "completed", "failed", "retried", "resumed"), 0
        )
    )
    #: The same counts as ``partitions``, from the status file (completed, failed).
    status_partitions: dict[str, int] = field(default_factory=dict)
    input_samples: int = 0
    input_bytes: int = 0
    rejected_samples: int = 0
    output_samples: int = 0
    exported_samples: int = 0
    op_input: dict[str, int] = field(default_factory=dict)
    op_output: dict[str, int] = field(default_factory=dict)
    op_failures: dict[str, int] = field(default_factory=dict)
    op_duration: dict[str, Histogram] = field(default_factory=dict)
    checkpoints_written: int = 0
    checkpoints_loaded: int = 0
    checkpoints_invalid: int = 0
    checkpoint_bytes: int = 0
    checkpoint_write: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))
    checkpoint_size: Histogram = field(default_factory=lambda: Histogram(SIZE_BUCKETS))
    plan_bytes: dict[int, int] = field(default_factory=dict)
    #: Resource usage (``observe/resources.py``): CPU seconds and peak RSS per op, the
    #: partitions' CPU seconds and bytes written, checkpoint bytes read back, the work dir's size.
    op_cpu: dict[str, float] = field(default_factory=dict)
    op_peak_rss: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    peak_rss_bytes: int | None = None
    written_bytes: int = 0
    checkpoint_read_bytes: int = 0
    work_dir_bytes: int | None = None

    def apply_status(self, data: dict[str, Any]) -> None:
        """Fold this run's ``status.json`` in: the figures that must not depend on the log.

        The phase only moves forward (starting, running, then an end state): the status file
        is written after the last event, so for a moment it may still say ``running``.
        """
        job_id = data.get("job_id")
        if isinstance(job_id, str) and job_id:
            self.job_id = job_id
        state = data.get("state")
        if state in RUNNER_PHASES and (state != "running" or self.phase == "starting"):
            self.phase = state
        started = _timestamp(data.get("started_at"))
        if started is not None and self.started_at is None:
            self.started_at = started
        checkpoint = _timestamp(data.get("last_checkpoint_at"))
        if checkpoint is not None:
            self.last_checkpoint_at = max(self.last_checkpoint_at or 0.0, checkpoint)
        parts = data.get("partitions")
        if not isinstance(parts, dict):
            return
        if _int(parts.get("total")):
            self.partitions_planned = _int(parts.get("total"))
        resumed = data.get("resumed")
        before = _int(resumed.get("partitions_done")) if isinstance(resumed, dict) else 0
        done_here = _int(parts.get("done")) - before  # partitions earlier runs finished excluded
        self.status_partitions["completed"] = done_here
        self.status_partitions["failed"] = _int(parts.get("failed"))

    def partition_count(self, state: str) -> int:
        """Partitions in ``state`` this run: the larger of the events' and the status' count."""
        return max(self.partitions[state], self.status_partitions.get(state, 0))

    def apply(self, ev: Event) -> None:
        """Fold one event into the figures; events from before ``since`` are skipped."""
        if ev.timestamp < self.since:
            return
        kind = ev.event_type if ev.event_type in EVENT_TYPES else "other"
        self.events[kind] = self.events.get(kind, 0) + 1
        self.last_event_at = max(self.last_event_at or 0.0, ev.timestamp)
        if ev.job_id:
            self.job_id = ev.job_id
        handler = _HANDLERS.get(ev.event_type)
        if handler is not None:
            handler(self, ev)

    # -- one method per event type that carries a figure
    def _job_start(self, ev: Event) -> None:
        self.phase = "running"
        self.started_at = ev.timestamp
        # The recipe's ops, from the config the event carries: their series start at zero,
        # so a rate over the first partitions is not lost to a series appearing mid-run.
        config = ev.get("config")
        process = config.get("process") if isinstance(config, dict) else None
        for item in process if isinstance(process, list) else ():
            if isinstance(item, dict) and len(item) == 1:
                op = str(next(iter(item)))
                self.op_input.setdefault(op, 0)
                self.op_output.setdefault(op, 0)
                self.op_failures.setdefault(op, 0)
                self.op_duration.setdefault(op, Histogram(DURATION_BUCKETS))
                self.op_cpu.setdefault(op, 0.0)

    def _job_complete(self, ev: Event) -> None:
        status = ev.get("status")
        self.phase = status if status in RUNNER_PHASES else "succeeded"
        if isinstance(ev.get("work_dir_bytes"), int):
            self.work_dir_bytes = ev.get("work_dir_bytes")

    def _peak(self, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool):
            self.peak_rss_bytes = max(self.peak_rss_bytes or 0, value)

    def _job_failed(self, ev: Event) -> None:
        self.phase = "failed"

    def _plan(self, ev: Event) -> None:
        total = ev.get("total_partitions")
        if isinstance(total, int):
            self.partitions_planned = total

    def _partition_start(self, ev: Event) -> None:
        self.partitions["started"] += 1
        self.input_samples += _int(ev.get("input_rows"))
        read = ev.get("input_bytes")
        if read is None and ev.partition_id is not None:
            read = self.plan_bytes.get(ev.partition_id)
        self.input_bytes += _int(read)

    def _partition_complete(self, ev: Event) -> None:
        self.partitions["completed"] += 1
        self.output_samples += _int(ev.get("output_rows"))
        cpu = ev.get("cpu_time_s")
        self.cpu_seconds += float(cpu) if isinstance(cpu, int | float) else 0.0
        self.written_bytes += _int(ev.get("bytes_written"))
        self._peak(ev.get("peak_rss_bytes"))

    def _partition_failed(self, ev: Event) -> None:
        self.partitions["failed"] += 1

    def _partition_retry(self, ev: Event) -> None:
        self.partitions["retried"] += 1

    def _partition_resume(self, ev: Event) -> None:
        self.partitions["resumed"] += 1

    def _records_rejected(self, ev: Event) -> None:
        meta = ev.get("metadata") or {}
        self.rejected_samples += _int(meta.get("count") if isinstance(meta, dict) else None)

    def _op_complete(self, ev: Event) -> None:
        op = str(ev.get("operation_name") or "unknown")
        self.op_input[op] = self.op_input.get(op, 0) + _int(ev.get("input_rows"))
        self.op_output[op] = self.op_output.get(op, 0) + _int(ev.get("output_rows"))
        duration = ev.get("duration")
        if isinstance(duration, int | float):
            self.op_duration.setdefault(op, Histogram(DURATION_BUCKETS)).observe(float(duration))
        cpu = ev.get("cpu_time_s")
        if isinstance(cpu, int | float):
            self.op_cpu[op] = self.op_cpu.get(op, 0.0) + float(cpu)
        peak = ev.get("peak_rss_bytes")
        if isinstance(peak, int) and not isinstance(peak, bool):
            self.op_peak_rss[op] = max(self.op_peak_rss.get(op, 0), peak)
            self._peak(peak)

    def _op_failed(self, ev: Event) -> None:
        op = str(ev.get("operation_name") or "unknown")
        self.op_failures[op] = self.op_failures.get(op, 0) + 1

    def _checkpoint_save(self, ev: Event) -> None:
        self.checkpoints_written += 1
        self.last_checkpoint_at = max(self.last_checkpoint_at or 0.0, ev.timestamp)
        size = ev.get("checkpoint_bytes")
        if size is None:
            size = checkpoint_size(ev.get("checkpoint_path"))
        if size is not None:
            self.checkpoint_bytes += int(size)
            self.checkpoint_size.observe(float(size))
        duration = ev.get("duration")
        if isinstance(duration, int | float):
            self.checkpoint_write.observe(float(duration))

    def _checkpoint_load(self, ev: Event) -> None:
        self.checkpoints_loaded += 1
        self.checkpoint_read_bytes += _int(ev.get("checkpoint_bytes"))

    def _checkpoint_invalid(self, ev: Event) -> None:
        self.checkpoints_invalid += 1

    def _export_complete(self, ev: Event) -> None:
        self.exported_samples += _int(ev.get("output_rows"))


_HANDLERS = {
    "job_start": RunnerFigures._job_start,
    "job_restart": RunnerFigures._job_start,
    "job_complete": RunnerFigures._job_complete,
    "job_failed": RunnerFigures._job_failed,
    "partition_plan_saved": RunnerFigures._plan,
    "partition_plan_loaded": RunnerFigures._plan,
    "processing_start": RunnerFigures._plan,
    "partition_start": RunnerFigures._partition_start,
    "partition_complete": RunnerFigures._partition_complete,
    "partition_failed": RunnerFigures._partition_failed,
    "partition_retry": RunnerFigures._partition_retry,
    "partition_resume": RunnerFigures._partition_resume,
    "records_rejected": RunnerFigures._records_rejected,
    "op_complete": RunnerFigures._op_complete,
    "op_failed": RunnerFigures._op_failed,
    "checkpoint_save": RunnerFigures._checkpoint_save,
    "checkpoint_load": RunnerFigures._checkpoint_load,
    "checkpoint_invalid": RunnerFigures._checkpoint_invalid,
    "export_complete": RunnerFigures._export_complete,
}


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _timestamp(value: Any) -> float | None:
    """Unix time of a status file's RFC 3339 time, or None."""
    if not isinstance(value, str):
        return None
    try:
        return parse_rfc3339(value).timestamp()
    except ValueError:
        return None


def checkpoint_size(path: Any) -> int | None:
    """The committed size of the checkpoint an event names, when the event does not carry it.

    Read from the partition's commit records (the file itself may be pruned by the time the
    event is read), newest record of that file first; the file's size as a last resort.
    """
    if not path:
        return None
    directory, _, name = str(path).rpartition("/")
    try:
        blobs = open_blobs(directory)
        for record in reversed(blobs.records(COMMITS)):
            if record.get("file") == name:
                return int(record["bytes"])
        return blobs.size(name)
    except (OSError, ValueError, KeyError, TypeError, RunnerError):
        return None  # on a volume this process cannot see


def plan_partition_bytes(work_dir: str | Path) -> dict[int, int]:
    """Each partition's input bytes, from ``<work_dir>/plan.json`` ({} until it exists)."""
    try:
        raw = WorkDir(work_dir).blobs.read_json(WorkDir.PLAN)
        return {int(p["pid"]): int(p.get("bytes", 0)) for p in raw.get("partitions", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RunnerError):
        return {}


class RunnerCollector(Collector):
    """Renders ``RunnerFigures`` as Prometheus families at scrape time."""

    def __init__(
        self, figures: RunnerFigures, lock: threading.Lock, namespace: str, job_name: str | None
    ) -> None:
        self.figures = figures
        self.lock = lock
        self.namespace = namespace
        self.job_name = job_name

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            yield from self._families(self.figures)

    def _families(self, f: RunnerFigures) -> Iterable[Metric]:
        keys = ["namespace", "job_name"]
        base = [self.namespace, self.job_name or f.job_id]

        def gauge(name: str, doc: str, value: float | None, unit: str = "") -> Metric | None:
            if value is None:
                return None
            g = GaugeMetricFamily(name, doc, labels=keys, unit=unit)
            g.add_metric(base, value)
            return g

        def counter(name: str, doc: str, value: float) -> Metric:
            c = CounterMetricFamily(name, doc, labels=keys)
            c.add_metric(base, value)
            return c

        def per(
            name: str, doc: str, label: str, values: dict[str, int] | dict[str, float]
        ) -> Metric:
            c = CounterMetricFamily(name, doc, labels=[*keys, label])
            for key in sorted(values):
                c.add_metric([*base, key], values[key])
            return c

        def gauge_per(name: str, doc: str, values: dict[str, int]) -> Metric:
            g = GaugeMetricFamily(name, doc, labels=[*keys, "op"])
            for key in sorted(values):
                g.add_metric([*base, key], values[key])
            return g

        def histogram(name: str, doc: str, h: Histogram, label: str = "", key: str = "") -> Metric:
            fam = HistogramMetricFamily(name, doc, labels=[*keys, label] if label else keys)
            fam.add_metric([*base, key] if label else base, h.buckets(), h.total)
            return fam

        info = GaugeMetricFamily(
            "datajuicer_runner_info", "The runner's version.", labels=[*keys, "version"]
        )
        info.add_metric([*base, __version__], 1)
        phase = GaugeMetricFamily(
            "datajuicer_runner_phase",
            "The runner's state, one-hot: 1 for the current phase.",
            labels=[*keys, "phase"],
        )
        for p in RUNNER_PHASES:
            phase.add_metric([*base, p], 1.0 if p == f.phase else 0.0)
        families: list[Metric | None] = [
            info,
            phase,
            gauge(
                "datajuicer_runner_start_timestamp_seconds",
                "When this runner started (or resumed) the job, Unix time.",
                f.started_at,
            ),
            gauge(
                "datajuicer_runner_last_event_timestamp_seconds",
                "When the last event of this run was logged, Unix time.",
                f.last_event_at,
            ),
            gauge(
                "datajuicer_runner_last_checkpoint_timestamp_seconds",
                "When the last checkpoint of this run was committed, Unix time.",
                f.last_checkpoint_at,
            ),
            gauge(
                "datajuicer_runner_partitions_planned",
                "Partitions in the job's plan.",
                f.partitions_planned,
            ),
            per(
                "datajuicer_runner_events",
                "Events logged by the driver and its tasks, by event type.",
                "type",
                f.events,
            ),
        ]
        for state, doc in (
            ("started", "Partitions read from their source and started."),
            ("completed", "Partitions brought through every op."),
            ("failed", "Partitions failed after their retries."),
            ("retried", "Partition attempts retried after a failure."),
            ("resumed", "Partitions resumed from a checkpoint instead of their source."),
        ):
            families.append(
                counter(f"datajuicer_runner_partitions_{state}", doc, f.partition_count(state))
            )
        families += [
            counter(
                "datajuicer_runner_input_samples",
                "Samples read from the input by partitions started from their source.",
                f.input_samples,
            ),
            counter(
                "datajuicer_runner_input_bytes",
                "Bytes of input read by partitions started from their source.",
                f.input_bytes,
            ),
            counter(
                "datajuicer_runner_rejected_samples",
                "Malformed input records set aside in rejects/.",
                f.rejected_samples,
            ),
            counter(
                "datajuicer_runner_output_samples",
                "Samples kept by completed partitions.",
                f.output_samples,
            ),
            counter(
                "datajuicer_runner_exported_samples",
                "Samples written to the export.",
                f.exported_samples,
            ),
            per(
                "datajuicer_runner_op_input_samples",
                "Samples an op received, by op.",
                "op",
                f.op_input,
            ),
            per(
                "datajuicer_runner_op_output_samples",
                "Samples an op passed on, by op.",
                "op",
                f.op_output,
            ),
            per(
                "datajuicer_runner_op_dropped_samples",
                "Samples an op removed (filters and deduplicators), by op.",
                "op",
                {op: f.op_input[op] - f.op_output.get(op, 0) for op in f.op_input},
            ),
            per(
                "datajuicer_runner_op_failures",
                "Op runs that raised on a sample, by op.",
                "op",
                f.op_failures,
            ),
        ]
        op_hist = HistogramMetricFamily(
            "datajuicer_runner_op_duration_seconds",
            "Time an op took on one partition.",
            labels=[*keys, "op"],
        )
        for op in sorted(f.op_duration):
            h = f.op_duration[op]
            op_hist.add_metric([*base, op], h.buckets(), h.total)
        families += [
            op_hist,
            counter(
                "datajuicer_runner_checkpoints_written",
                "Checkpoints committed.",
                f.checkpoints_written,
            ),
            counter(
                "datajuicer_runner_checkpoints_loaded",
                "Checkpoints loaded to resume a partition.",
                f.checkpoints_loaded,
            ),
            counter(
                "datajuicer_runner_checkpoints_invalid",
                "Checkpoints discarded because they failed verification.",
                f.checkpoints_invalid,
            ),
            counter(
                "datajuicer_runner_checkpoint_written_bytes",
                "Bytes of checkpoints committed.",
                f.checkpoint_bytes,
            ),
            histogram(
                "datajuicer_runner_checkpoint_write_duration_seconds",
                "Time to write, fsync and commit one checkpoint.",
                f.checkpoint_write,
            ),
            histogram(
                "datajuicer_runner_checkpoint_size_bytes",
                "Size of one committed checkpoint.",
                f.checkpoint_size,
            ),
            counter(
                "datajuicer_runner_checkpoint_read_bytes",
                "Bytes of checkpoints read back to resume partitions.",
                f.checkpoint_read_bytes,
            ),
            counter(
                "datajuicer_runner_written_bytes",
                "Bytes completed partitions wrote to the work dir (checkpoints, rejects).",
                f.written_bytes,
            ),
            counter(
                "datajuicer_runner_cpu_seconds",
                "CPU seconds of the completed partitions' tasks (their worker processes).",
                f.cpu_seconds,
            ),
            per(
                "datajuicer_runner_op_cpu_seconds",
                "CPU seconds of the worker process while an op ran, by op.",
                "op",
                f.op_cpu,
            ),
            gauge_per(
                "datajuicer_runner_op_peak_rss_bytes",
                "The highest peak RSS of a worker process while an op ran, by op.",
                f.op_peak_rss,
            ),
            gauge(
                "datajuicer_runner_worker_peak_rss_bytes",
                "The highest peak RSS of a worker process running a partition.",
                f.peak_rss_bytes,
            ),
            gauge(
                "datajuicer_runner_work_dir_bytes",
                "Disk space the work dir uses (checkpoints, event log, state files).",
                f.work_dir_bytes,
            ),
        ]
        return [m for m in families if m is not None]


@dataclass(frozen=True)
class MetricsHandle:
    """A running metrics endpoint; ``close`` stops the server and the follower."""

    host: str
    port: int
    figures: RunnerFigures
    lock: threading.Lock
    registry: CollectorRegistry
    _server: Any
    _server_thread: threading.Thread
    _follower: threading.Thread
    _status_follower: threading.Thread
    _stop: threading.Event

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def snapshot(self) -> dict[str, Any]:
        """A copy of a few figures, read under the lock (for callers and tests)."""
        with self.lock:
            return {
                "phase": self.figures.phase,
                "events": dict(self.figures.events),
                "partitions": dict(self.figures.partitions),
            }

    def close(self, timeout: float = 10.0) -> None:
        """Stop following and serving; waits at most ``timeout`` seconds for each thread."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._follower.join(timeout)
        self._status_follower.join(timeout)
        self._server_thread.join(timeout)

    def __enter__(self) -> MetricsHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(
    work_dir: str | Path,
    port: int,
    host: str = "0.0.0.0",
    namespace: str | None = None,
    job_name: str | None = None,
    poll_interval: float = 0.2,
    run_id: str | None = None,
) -> MetricsHandle:
    """Serve ``/metrics`` on ``host:port`` (0: any free port) for the job in ``work_dir``.

    ``namespace`` and ``job_name`` label every series; they default to the environment the
    operator sets (``DJ_JOB_NAMESPACE``, ``DJ_JOB_NAME``), else to "" and the job id the
    status file (or the log) reports. ``run_id`` is the run whose status file counts; without
    it, any status file other than the one present at the call. Returns at once; the
    followers read the status file and the events as they are written.
    """
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics port: {port!r} is not a TCP port; use 1-65535, or 0 for any")
    figures = RunnerFigures(since=time.time())
    lock = threading.Lock()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        RunnerCollector(
            figures,
            lock,
            namespace if namespace is not None else os.environ.get(contract.ENV_JOB_NAMESPACE, ""),
            job_name if job_name is not None else os.environ.get(contract.ENV_JOB_NAME) or None,
        )
    )
    server, server_thread = start_http_server(int(port), addr=host, registry=registry)
    stop = threading.Event()

    def follow() -> None:
        for ev in follow_events(
            WorkDir(work_dir).events_uri, poll_interval=poll_interval, stop=stop
        ):
            if ev.event_type in ("partition_plan_saved", "partition_plan_loaded"):
                sizes = plan_partition_bytes(work_dir)
                with lock:
                    figures.plan_bytes = sizes
            try:
                with lock:
                    figures.apply(ev)
            except Exception:  # one odd event must not stop the figures for the rest of the run
                log.exception("metrics: could not count event %s", ev.event_id)

    stale = read_status(work_dir)  # a previous run's status file, until this run writes its own
    stale_run = stale.get("run_id") if stale is not None and run_id is None else None

    work = WorkDir(work_dir)

    def follow_status() -> None:
        seen: object = None
        sized_at = 0.0
        # In object storage each look is a request: once a second at most, and the work dir's
        # size (a listing of all of it) once a minute.
        interval = poll_interval if work.is_local else max(poll_interval, 1.0)
        size_every = WORK_DIR_SIZE_INTERVAL_S if work.is_local else 4 * WORK_DIR_SIZE_INTERVAL_S
        while not stop.wait(interval):
            if time.monotonic() - sized_at >= size_every:
                sized_at = time.monotonic()
                try:
                    size = work.size()
                except (OSError, RunnerError):
                    size = None
                if size is not None:
                    with lock:
                        figures.work_dir_bytes = size
            if work.is_local:
                try:
                    st = work.status_path.stat()
                except OSError:
                    continue
                if (st.st_mtime_ns, st.st_size) == seen:
                    continue
                seen = (st.st_mtime_ns, st.st_size)
            data = read_status(work_dir)
            if data is None or (stale is not None and data.get("run_id") == stale_run):
                continue
            if run_id is not None and data.get("run_id") != run_id:
                continue
            try:
                with lock:
                    figures.apply_status(data)
            except Exception:  # an odd file must not stop the figures for the rest of the run
                log.exception("metrics: could not read %s", work.show(WorkDir.STATUS))

    follower = threading.Thread(target=follow, name="dj-runner-metrics", daemon=True)
    follower.start()
    status_follower = threading.Thread(
        target=follow_status, name="dj-runner-metrics-status", daemon=True
    )
    status_follower.start()
    return MetricsHandle(
        host=host,
        port=int(server.server_port),
        figures=figures,
        lock=lock,
        registry=registry,
        _server=server,
        _server_thread=server_thread,
        _follower=follower,
        _status_follower=status_follower,
        _stop=stop,
    )
