"""The published Kubernetes Event reasons of a DataJuicerJob, and a deduplicating recorder.

``EventReason`` is the contract with users (and their alerting on Events): every Event the
operator posts on a djjob has one of its UpperCamelCase reasons, with the type listed there
(Warning for failures); ``CATALOG`` maps the names to the members. Events mark transitions
only; progress goes to status and metrics.

``EventCorrelator`` is the pure logic of client-go's event recorder
(``k8s.io/client-go/tools/record/events_cache.go``):

- deduplication: an Event with the same object, type, reason and message as one already
  posted raises that Event's ``count`` and ``lastTimestamp`` instead of creating an object;
- a per-object token bucket (burst 25, then one every 5 minutes, as client-go), past which
  Events are dropped and counted as suppressed;
- bounded memory: both caches are LRU with at most ``max_entries`` keys.

An Event's name is derived from its object's uid, type, reason and message, so an operator
that restarts and posts an Event it posted before finds the object (409) and raises its count:
deduplication survives restarts, which client-go's random names do not.

``EventRecorder`` applies the correlator's decisions through an injected ``EventSink`` (the
API-server calls), so the logic is tested without a cluster and the I/O stays in one place.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, unique
from typing import Any, Literal, Protocol

EventType = Literal["Normal", "Warning"]

#: The component named as the Events' source.
COMPONENT = "datajuicer-operator"
#: Longest message posted; longer ones are cut with an ellipsis (events.k8s.io caps at 1 kB).
MAX_MESSAGE = 1024


@unique
class EventReason(Enum):
    """Every reason the operator posts on a DataJuicerJob: the member's name is the Event's
    ``reason``, its ``type`` the Event's type, ``when`` when it is posted.

    The operator names a reason only through a member (``EventReason.Started``), so a reason
    outside the catalog cannot be written; the failure reasons of ``status.failure.reason``
    (``dj_operator.api.constants.FAILURE_REASONS``) are members too, found by name.
    """

    type: EventType
    when: str

    def __init__(self, type_: EventType, when: str) -> None:
        self.type = type_
        self.when = when

    Created = ("Normal", "the job's children (recipe ConfigMap, volume, runner) exist")
    ClusterReady = ("Normal", "kuberay mode: the job's RayCluster reports ready")
    Started = ("Normal", "the runner pod of the first attempt is running")
    Resumed = ("Normal", "a runner reported what it restored from the checkpoints")
    Resuming = ("Normal", "a new attempt after a stop the operator made (e.g. suspend)")
    Retrying = ("Warning", "an attempt ended retryably (exit code or pod lost); says why")
    Suspended = ("Normal", "suspend: true took effect and the runner pods are gone")
    Succeeded = ("Normal", "the runner exited 0; the output is complete")
    PartiallySucceeded = ("Warning", "exit 3: some partitions failed, within the limit")
    InvalidSpec = ("Warning", "the recipe or spec is invalid; nothing was started")
    InvalidInput = ("Warning", "the runner found the input missing or unreadable (exit 2)")
    ResumeRefused = ("Warning", "the work dir belongs to another recipe or input (exit 4)")
    RunnerFailed = ("Warning", "partitions failed beyond the limit (exit 1)")
    BackoffLimitExceeded = ("Warning", "retryable failures used up backoffLimit")
    DeadlineExceeded = ("Warning", "activeDeadlineSeconds passed; the pods were stopped")
    Stalled = ("Warning", "no new checkpoint or partition within progressDeadlineSeconds")
    ClusterNotReady = ("Warning", "kuberay mode: the RayCluster never became ready")
    RecipeSourceMissing = ("Warning", "recipeFrom names a ConfigMap or key that is absent")
    ChildConflict = ("Warning", "a child's name is taken by an object the job does not own")
    PodCreateFailed = ("Warning", "the API server refused a child as invalid (422); not retried")
    StartupDeadlineExceeded = ("Warning", "a pod did not start within startupDeadlineSeconds")
    CreateForbidden = ("Warning", "a create was forbidden (403: quota, admission); backing off")
    PodBlocked = ("Warning", "a runner or Ray pod cannot start (image, config, scheduling)")
    RayPodLost = (
        "Warning",
        "kuberay mode: Ray pods on a node that stopped reporting were removed; KubeRay replaces"
        " them (or, the job finished or suspended, none stays)",
    )
    RunnerLost = (
        "Warning",
        "the runner pod's node stopped reporting; the pod was removed, the next attempt resumes",
    )
    PartitionsFailed = (
        "Warning",
        "the runner's partitions failed after their retries (1, 2, 4, ...)",
    )
    PartitionRetrying = ("Warning", "the runner retries partitions (at 1, 2, 4, ... retries)")
    CheckpointStale = ("Warning", "no checkpoint for half of progressDeadlineSeconds")
    SpecChangePinned = (
        "Warning",
        "ray.mode or the storage changed after the job started; the job keeps the pinned values",
    )


#: The catalog by reason name (what users and alerting see).
CATALOG: dict[str, EventReason] = {r.name: r for r in EventReason}


def reason(name: str | EventReason) -> EventReason:
    """The catalog entry for ``name``; an unknown reason is a programming error, named."""
    if isinstance(name, EventReason):
        return name
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(
            f"event reason {name!r} is not in the published catalog; use one of "
            f"{', '.join(sorted(CATALOG))}"
        ) from None


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about (the ``involvedObject``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ObjectRef:
        meta = body.get("metadata", {})
        return cls(
            api_version=str(body.get("apiVersion", "")),
            kind=str(body.get("kind", "")),
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


@dataclass(frozen=True)
class Create:
    """Post a new Event object."""

    body: dict[str, Any]


@dataclass(frozen=True)
class Bump:
    """Raise the count of an Event already posted (``name`` in ``namespace``)."""

    namespace: str
    name: str
    count: int
    last_timestamp: str


@dataclass(frozen=True)
class Suppressed:
    """Dropped by the per-object rate limit."""

    reason: str


Decision = Create | Bump | Suppressed


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class _Posted:
    name: str
    count: int


@dataclass
class EventCorrelator:
    """client-go's dedupe and spam filter, as pure logic over an injected clock value."""

    burst: int = 25
    refill_every_s: float = 300.0
    max_entries: int = 4096
    _buckets: OrderedDict[ObjectRef, _Bucket] = field(default_factory=OrderedDict)
    _posted: OrderedDict[tuple[Any, ...], _Posted] = field(default_factory=OrderedDict)

    def decide(
        self, obj: ObjectRef, reason_name: EventReason | str, message: str, now: float
    ) -> Decision:
        """What to do with one Event: create it, bump an identical one, or drop it."""
        entry = reason(reason_name)
        message = _truncate(message)
        if not self._take_token(obj, now):
            return Suppressed(entry.name)
        key = (obj, entry.type, entry.name, message)
        stamp = _rfc3339(now)
        posted = self._posted.get(key)
        if posted is not None:
            posted.count += 1
            self._posted.move_to_end(key)
            return Bump(obj.namespace, posted.name, posted.count, stamp)
        name = event_name(obj, entry.type, entry.name, message)
        self._posted[key] = _Posted(name, 1)
        _bound(self._posted, self.max_entries)
        return Create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": obj.namespace},
                "involvedObject": obj.to_dict(),
                "reason": entry.name,
                "message": message,
                "type": entry.type,
                "count": 1,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "source": {"component": COMPONENT},
                "reportingComponent": COMPONENT,
                "reportingInstance": COMPONENT,
            }
        )

    def observed(
        self, obj: ObjectRef, reason_name: EventReason | str, message: str, count: int
    ) -> None:
        """The server holds this Event with ``count`` (it was posted before a restart)."""
        entry = reason(reason_name)
        posted = self._posted.get((obj, entry.type, entry.name, _truncate(message)))
        if posted is not None:
            posted.count = max(posted.count, count)

    def forget(self, obj: ObjectRef, reason_name: EventReason | str, message: str) -> None:
        """Drop the memory of one posted Event (it expired on the server: post it anew)."""
        entry = reason(reason_name)
        self._posted.pop((obj, entry.type, entry.name, _truncate(message)), None)

    def _take_token(self, obj: ObjectRef, now: float) -> bool:
        bucket = self._buckets.get(obj)
        if bucket is None:
            bucket = self._buckets[obj] = _Bucket(float(self.burst), now)
            _bound(self._buckets, self.max_entries)
        else:
            self._buckets.move_to_end(obj)
            refill = (now - bucket.updated) / self.refill_every_s
            bucket.tokens = min(float(self.burst), bucket.tokens + max(0.0, refill))
            bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


def event_name(obj: ObjectRef, type_: str, reason_name: str, message: str) -> str:
    """The Event's object name: the object's name and a digest of what makes it the same Event
    (at most 253 characters, a DNS subdomain as Event names must be)."""
    digest = hashlib.sha256(f"{obj.uid}/{type_}/{reason_name}/{message}".encode()).hexdigest()
    return f"{obj.name[:230]}.{digest[:16]}"


def _bound(cache: OrderedDict[Any, Any], limit: int) -> None:
    while len(cache) > limit:
        cache.popitem(last=False)


def _truncate(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventGone(Exception):
    """The sink's patch found no such Event (Events expire on the server, 1 h by default)."""


class EventSink(Protocol):
    """The API-server calls the recorder needs; the operator's kube module implements them."""

    def create(self, body: dict[str, Any]) -> int:
        """Create the Event; if one of that name exists, raise its count instead. Returns the
        count the Event has on the server afterwards (1 for a new one)."""
        ...

    def bump(self, namespace: str, name: str, count: int, last_timestamp: str) -> None:
        """Patch ``count`` and ``lastTimestamp``; raise ``EventGone`` on 404."""
        ...


class EventRecorder:
    """Posts catalog Events on objects through ``sink``, deduplicated and rate-limited.

    ``on_suppressed(reason)`` is called for each dropped Event (the operator counts them in
    ``datajuicer_operator_events_suppressed_total``); ``on_posted(type, reason)`` for each
    Event created or bumped. Thread-safe: reconciles of several jobs may post at once.
    """

    def __init__(
        self,
        sink: EventSink,
        correlator: EventCorrelator | None = None,
        clock: Callable[[], float] = time.time,
        on_suppressed: Callable[[str], None] = lambda _reason: None,
        on_posted: Callable[[str, str], None] = lambda _type, _reason: None,
    ) -> None:
        self.sink = sink
        self.correlator = correlator or EventCorrelator()
        self.clock = clock
        self.on_suppressed = on_suppressed
        self.on_posted = on_posted
        self._lock = threading.Lock()

    def record(
        self, body: dict[str, Any], reason_name: EventReason | str, message: str
    ) -> Decision:
        """Post (or bump, or drop) one Event about the object ``body``; returns the decision.
        A reason given by name must be in the catalog (else ValueError)."""
        with self._lock:
            return self._record(ObjectRef.from_body(body), reason(reason_name), message)

    def _record(self, obj: ObjectRef, entry: EventReason, message: str) -> Decision:
        decision = self.correlator.decide(obj, entry, message, self.clock())
        if isinstance(decision, Suppressed):
            self.on_suppressed(decision.reason)
            return decision
        if isinstance(decision, Bump):
            try:
                self.sink.bump(
                    decision.namespace, decision.name, decision.count, decision.last_timestamp
                )
            except EventGone:
                self.correlator.forget(obj, entry, message)
                decision = self.correlator.decide(obj, entry, message, self.clock())
                if isinstance(decision, Suppressed):
                    self.on_suppressed(decision.reason)
                    return decision
        if isinstance(decision, Create):
            count = self.sink.create(decision.body)
            if count > 1:
                self.correlator.observed(obj, entry, message, count)
        self.on_posted(entry.type, entry.name)
        return decision
