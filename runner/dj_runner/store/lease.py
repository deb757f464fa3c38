"""The writer lock of a work dir in object storage: a lease object renewed by its holder.

Object storage has no ``flock``. The holder of ``<work_dir>/.lock`` is the runner whose record
is in it and who keeps it fresh:

- it is taken with a conditional write: ``If-None-Match: *`` when there is none, else
  ``If-Match`` on the version read, so of two runners racing for it exactly one wins;
- the holder rewrites it every ``ttl/3`` seconds (``If-Match`` on its own last version). A
  renewal that finds another version has lost the lease: the holder stops committing
  (``lost`` turns true, and the newer run's claim epoch fences its commits anyway);
- a runner that finds the lease held waits: a renewal it sees proves the holder alive, and it
  is refused at once (``WorkDirLocked``, exit 5, naming the holder) unless it was asked to wait
  longer (``--wait-for-lock``); a lease not renewed for ``ttl`` seconds, by the record's own
  clock or as watched by the waiter (so clock skew cannot keep a dead holder's lease alive),
  is taken over. A killed runner's lease so blocks its successor for at most ``ttl`` seconds;
- a holder that ends releases the lease by writing a released record over its own version.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dj_runner.errors import Interrupted
from dj_runner.store.workdir import WorkDir

#: Seconds a lease stays valid without a renewal; renewed every third of it.
LEASE_TTL_S = 15.0
#: Sets the lease's seconds (at least 1): shorter takes a dead holder's work dir over sooner,
#: at the price of more renewals (one conditional PUT every third of it).
ENV_LEASE_TTL = "DJ_RUNNER_S3_LEASE_TTL_S"


def lease_ttl() -> float:
    try:
        return max(1.0, float(os.environ.get(ENV_LEASE_TTL, LEASE_TTL_S)))
    except ValueError:
        return LEASE_TTL_S


@dataclass(frozen=True)
class LeaseRecord:
    holder: dict[str, Any]
    renewed_at: float
    ttl_s: float
    released: bool = False

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> LeaseRecord | None:
        try:
            raw = json.loads(data)
            return cls(
                dict(raw["holder"]),
                float(raw["renewed_at"]),
                float(raw["ttl_s"]),
                bool(raw.get("released", False)),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def expired(self, now: float) -> bool:
        return self.released or now > self.renewed_at + self.ttl_s


def read_lease(work: WorkDir) -> LeaseRecord | None:
    data = work.blobs.read(WorkDir.LOCK)
    return None if data is None else LeaseRecord.parse(data)


class Lease:
    """A work dir's lease in object storage, held from ``acquire`` to ``release``."""

    def __init__(self, work: WorkDir, holder: dict[str, Any], ttl_s: float | None = None):
        self.work = work
        self.holder = holder
        self.ttl_s = ttl_s if ttl_s is not None else lease_ttl()
        self.lost = False
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _record(self, released: bool = False) -> bytes:
        return LeaseRecord(self.holder, time.time(), self.ttl_s, released).to_bytes()

    def _take(self, version: str | None) -> bool:
        blobs = self.work.blobs
        data = self._record()
        if version is None:
            self._version = blobs.create(WorkDir.LOCK, data)
        else:
            self._version = blobs.replace(WorkDir.LOCK, data, version)
        return self._version is not None

    def acquire(
        self,
        wait_s: float,
        locked: Callable[[dict[str, Any] | None, float], BaseException],
        poll_s: float = 0.5,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Take the lease, or raise ``locked(holder, waited)`` (see the module's rules)."""
        start = time.monotonic()
        seen: tuple[str, float] | None = None  # a version, and when this waiter first saw it
        while True:
            got = self.work.blobs.read_versioned(WorkDir.LOCK)
            now = time.monotonic()
            if got is None:
                if self._take(None):
                    break
                continue
            data, version = got
            record = LeaseRecord.parse(data)
            if seen is None or seen[0] != version:
                renewed = seen is not None  # it changed while watched: the holder is alive
                seen = (version, now)
            else:
                renewed = False
            stale = (
                record is None
                or record.expired(time.time())
                or now - seen[1] > (record.ttl_s if record else 0.0)
            )
            if stale:
                if self._take(version):
                    break
                continue
            waited = now - start
            if cancelled():
                raise Interrupted(f"stopped while waiting for the lease of {self.work.uri}")
            if (renewed and waited >= wait_s) or waited >= max(wait_s, record.ttl_s * 2):
                raise locked(record.holder if record else None, waited)
            time.sleep(poll_s)
        self._thread = threading.Thread(target=self._renew_loop, name="dj-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            with self._lock:
                if self._version is None:
                    return
                try:
                    version = self.work.blobs.replace(WorkDir.LOCK, self._record(), self._version)
                except Exception:
                    continue
                self._version = version
                if version is None:
                    self.lost = True  # taken over: this run's commits are fenced off
                    return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
        with self._lock:
            version, self._version = self._version, None
        if version is not None:
            with contextlib.suppress(Exception):
                self.work.blobs.replace(WorkDir.LOCK, self._record(released=True), version)
