"""Reads DataJuicerJob bodies into the figures the operator's metrics show, and caches them.

``JobView.of(body, now)`` reads one job: its phase, conditions, times, attempts and, from
``status.progress`` (``ProgressFields``, in either of its shapes), partitions, samples and an
ETA. Nothing else of the body is read, and nothing is written.

``JobIndex`` holds the latest body of every DataJuicerJob the operator watches, keyed by
(namespace, name): handlers call ``index.upsert(body)`` on every watch event and
``index.remove(namespace, name)`` on deletion; the metrics render their per-job families from
``index.views()`` at each scrape (``dj_operator.metrics``), and are told of each phase change
through ``on_transition(old, new)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dj_operator.api import constants as c
from dj_operator.status import timeline, times

#: The statuses a condition may have; other values are not read.
CONDITION_STATUSES = ("True", "False", "Unknown")


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp (``Z`` or offset) as Unix seconds; None when absent or invalid."""
    if not isinstance(value, str):
        return None
    moment = times.parse(value)
    return None if moment is None else moment.timestamp()


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
    status.{phase,conditions,startTime,completionTime,timeline,failure.reason,attempts (a list
    of records with startTime, or a number),restarts|runnerRestarts}; status.progress in either
    of the shapes ``ProgressFields`` reads.
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
    milestones: dict[str, float]  # ``timeline.milestones``: the startup milestones reached

    @classmethod
    def of(cls, body: Mapping[str, Any], now: float) -> JobView:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        progress = ProgressFields(status.get("progress") or {})
        phase = status.get("phase") if status.get("phase") in c.PHASES else c.PENDING
        conditions = tuple(
            (str(cond.get("type")), str(cond.get("status")))
            for cond in status.get("conditions") or ()
            if isinstance(cond, Mapping)
            and cond.get("type")
            and cond.get("status") in CONDITION_STATUSES
        )
        started = parse_time(status.get("startTime")) or _transition_time(status, c.COND_RUNNING)
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
            mode=str((spec.get("ray") or {}).get("mode") or c.MODE_LOCAL),
            phase=phase,
            conditions=conditions,
            created_at=parse_time(meta.get("creationTimestamp")),
            started_at=started,
            completed_at=parse_time(status.get("completionTime")),
            failure_reason=(
                str((status.get("failure") or {}).get("reason") or "Unknown")
                if phase == c.FAILED
                else None
            ),
            attempt=attempt,
            restarts=int(restarts if restarts is not None else max(0, attempt - 1)),
            partitions=progress.partitions(),
            samples=progress.samples(),
            last_checkpoint_at=last_checkpoint,
            last_progress_at=max(moments) if moments else None,
            eta_seconds=None,
            milestones=timeline.milestones(body),
        )
        run_started = progress.time("started_at", "startTime")
        if run_started is None and isinstance(attempts, list) and attempts:
            last = attempts[-1]
            run_started = parse_time(last.get("startTime")) if isinstance(last, Mapping) else None
        return _with_eta(view, progress, run_started, now)

    @property
    def progress_ratio(self) -> float:
        total = self.partitions.get("total") or 0
        if self.phase == c.SUCCEEDED:
            return 1.0
        if total <= 0:
            return 0.0
        return min(1.0, (self.partitions.get("done", 0) + self.partitions.get("failed", 0)) / total)


def _transition_time(status: Mapping[str, Any], condition: str) -> float | None:
    for cond in status.get("conditions") or ():
        if (
            isinstance(cond, Mapping)
            and cond.get("type") == condition
            and cond.get("status") == "True"
        ):
            return parse_time(cond.get("lastTransitionTime"))
    return None


@dataclass(frozen=True)
class ProgressFields:
    """The figures of ``status.progress`` in either shape: the runner's status.json as the
    contract writes it (``partitions.done``, ``samples.in``, ``last_checkpoint_at`` ...), or the
    flattened camelCase form the runner's status reporter patches (``partitionsCompleted``,
    ``samplesIn``, ``lastCheckpointTime`` ...)."""

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


def _with_eta(
    view: JobView, progress: ProgressFields, run_started: float | None, now: float
) -> JobView:
    """The ETA while Running: to the runner's estimated completion time if it gives one (the
    time ``kubectl describe`` and ``dj-runner status`` show), else the remaining partitions at
    the pace of this run (partitions finished since it started, resumed ones excluded)."""
    if view.phase != c.RUNNING:
        return view
    given = progress.eta(now)
    if given is not None:
        return replace(view, eta_seconds=given)
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
    return replace(view, eta_seconds=remaining * elapsed / finished_here)


Transition = Callable[[JobView | None, JobView], None]


#: A finished job's per-job series (and its body in the index) go this long after it finished,
#: even while the job object stays: the series stay bounded by the jobs live or recently done.
FINISHED_SERIES_TTL = 3600.0


class JobIndex:
    """The latest body of every DataJuicerJob, keyed by (namespace, name); thread-safe.

    ``on_transition(old, new)`` is called on each upsert with the previous view (None when
    the job is new to this process) and the new one. A job finished more than
    ``finished_ttl`` seconds ago is left out of ``views`` and dropped from the index.
    """

    def __init__(
        self,
        on_transition: Transition | None = None,
        clock: Callable[[], float] = time.time,
        finished_ttl: float = FINISHED_SERIES_TTL,
    ) -> None:
        self.finished_ttl = finished_ttl
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
        views, expired = [], []
        for body in bodies:
            view = JobView.of(body, now)
            if view.completed_at is not None and now - view.completed_at > self.finished_ttl:
                expired.append((view.namespace, view.name))
            else:
                views.append(view)
        with self._lock:
            for key in expired:
                self._bodies.pop(key, None)
        return sorted(views, key=lambda v: (v.namespace, v.name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)
