"""The work dir's storage: relative keys to whole objects, on a local disk or in a bucket.

Every reader and writer of a work dir goes through a ``Blobs``: ``LocalBlobs`` for a directory,
``S3Blobs`` for an ``s3://bucket/prefix``. What each offers, and what it relies on:

- ``write`` replaces an object atomically: a reader sees the old bytes or the new, never a
  part. Locally: a temporary name, fsync, rename, fsync of the directory. In S3: one
  ``PutObject`` (an object appears only once its upload is complete; a multipart upload killed
  midway never becomes an object).
- ``create`` writes an object only if there is none (``If-None-Match: *``; locally a hard link,
  which fails on an existing name); ``replace`` writes only over the version read before
  (``If-Match`` with its ETag; locally a compare of inode, size and mtime then a rename, which
  the work dir's ``flock`` serialises). These are what the claim, the lease and the commit logs
  build on. A store that refuses conditional writes (``501 NotImplemented``) is refused as a
  work dir, with the reason, before any work.
- ``append`` and ``records`` are an append-only log of JSON records: locally one JSONL file
  (``atomic.append_record``); in S3, which has no append, one object per record under the
  log's key, named by a sequence number and created with ``If-None-Match``, so two writers
  never overwrite each other's record and readers see the records in one order.
- ``read``, ``size``, ``list`` and ``delete`` mean what they say. Reads in S3 are strongly
  consistent (AWS since December 2020, and every S3-compatible server this was tried on).
  ``delete_many`` removes many objects: in S3 one ``DeleteObjects`` request per 1,000 keys
  (one object per ``DeleteObject`` on a store that refuses it).

S3 requests go through botocore, with the standard AWS credential chain and the endpoint and
region of ``location.S3Config``; transient errors (503 SlowDown, 5xx, resets, timeouts) are
retried by its ``standard`` mode up to ``location.S3_MAX_ATTEMPTS`` attempts, and every retry
is counted (``s3_retries``). No message carries a secret (``location.scrub``).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dj_runner.errors import InvalidInput, RunnerError
from dj_runner.store.atomic import append_record, read_records, tmp_name, write_atomic
from dj_runner.store.location import (
    S3_CONNECT_TIMEOUT_S,
    S3_MAX_ATTEMPTS,
    S3_OUTAGE_ENV,
    S3_OUTAGE_S,
    S3_REQUEST_TIMEOUT_S,
    S3Config,
    configure_s3,
    current_s3_config,
    endpoint_of,
    is_s3,
    region_of,
    scrub,
    split_s3,
)
from dj_runner.store.nospace import raising_no_space

#: The width of a record's sequence number in an S3 log: ``<log>/<seq>.json``.
_SEQ_WIDTH = 10


@dataclass(frozen=True)
class Entry:
    """One object under a prefix: its key relative to the store's root, size and mtime."""

    key: str
    size: int
    mtime: float
    version: str = ""  # the ETag, in a bucket


class Conflict(RunnerError):
    """A conditional write lost: the object exists, or changed since it was read."""


class Blobs(ABC):
    """A work dir's objects by relative POSIX key (``checkpoints/p00001/op001.parquet``)."""

    uri: str

    @property
    def is_local(self) -> bool:
        return False

    def join(self, key: str) -> str:
        """The URI or path a user knows an object by (for messages and events)."""
        return f"{self.uri.rstrip('/')}/{key}"

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The object's bytes; None when there is none."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and a version tag for ``replace``; None when there is none."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Replace the object atomically."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> str | None:
        """Write the object only if none exists: its new version, or None when one does."""

    @abstractmethod
    def replace(self, key: str, data: bytes, version: str) -> str | None:
        """Write the object only if it is still at ``version``: its new version, or None."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes; None when there is none."""

    @abstractmethod
    def list(self, prefix: str) -> list[Entry]:
        """Every object under ``prefix`` (a directory's key, or ``""``), at any depth."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (no error when there is none)."""

    def delete_many(self, keys: list[str]) -> None:
        """Remove the objects (no error for one that is not there)."""
        for key in keys:
            self.delete(key)

    def delete_tree(self, prefix: str) -> None:
        """Remove every object under ``prefix``."""
        self.delete_many([entry.key for entry in self.list(prefix)])

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def read_json(self, key: str) -> Any:
        """The object parsed as JSON; None when there is none. Raises ValueError if garbled."""
        data = self.read(key)
        return None if data is None else json.loads(data)

    def write_json(self, key: str, value: Any) -> None:
        self.write(key, json.dumps(value, indent=1, sort_keys=True, default=str).encode())

    @abstractmethod
    def append(self, log: str, record: dict[str, Any]) -> None:
        """Add ``record`` at the end of the append-only log ``log``."""

    @abstractmethod
    def records(self, log: str) -> list[dict[str, Any]]:
        """The log's records in the order they were appended (torn ones skipped)."""

    def known_records(self, log: str) -> list[dict[str, Any]]:
        """The log's records as this process last saw them (with its own appends since): no
        request in a bucket. What prunes old files may use; what decides must use ``records``."""
        return self.records(log)


# ------------------------------------------------------------------------------------ local


class LocalBlobs(Blobs):
    """A directory on a local or mounted filesystem."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    @property
    def is_local(self) -> bool:
        return True

    def path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/")) if key else self.root

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    @staticmethod
    def _version(st: os.stat_result) -> str:
        return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        path = self.path(key)
        try:
            with open(path, "rb") as fh:
                return fh.read(), self._version(os.fstat(fh.fileno()))
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        write_atomic(self.path(key), lambda tmp: tmp.write_bytes(data))

    def create(self, key: str, data: bytes) -> str | None:
        path = self.path(key)
        tmp = tmp_name(path)
        with raising_no_space(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.write_bytes(data)
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                try:
                    os.link(tmp, path)  # atomic, and fails on an existing name
                except FileExistsError:
                    return None
            finally:
                tmp.unlink(missing_ok=True)
        return self._version(path.stat())

    def replace(self, key: str, data: bytes, version: str) -> str | None:
        path = self.path(key)
        try:
            current = self._version(path.stat())
        except FileNotFoundError:
            return None
        if current != version:
            return None
        self.write(key, data)
        return self._version(path.stat())

    def size(self, key: str) -> int | None:
        try:
            st = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if not _is_dir(st) else None

    def list(self, prefix: str) -> list[Entry]:
        base = self.path(prefix)
        out: list[Entry] = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = Path(dirpath) / name
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                out.append(Entry(full.relative_to(self.root).as_posix(), st.st_size, st.st_mtime))
        out.sort(key=lambda e: e.key)
        return out

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        import shutil

        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def append(self, log: str, record: dict[str, Any]) -> None:
        path = self.path(log)
        path.parent.mkdir(parents=True, exist_ok=True)
        append_record(path, record)

    def records(self, log: str) -> list[dict[str, Any]]:
        return read_records(self.path(log))


def _is_dir(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISDIR(st.st_mode)


# --------------------------------------------------------------------------------------- S3

#: Retries botocore made for this process's work-dir requests (the first attempt not counted).
_retries = 0
_retries_lock = threading.Lock()


def s3_retries() -> int:
    """How many S3 requests of this process's work dirs were retried after a transient error."""
    return _retries


def s3_retry_report() -> tuple[str, int]:
    """``(process, retries so far)``: what a partition task reports, so that the driver can add
    up every process's count once (``host:pid`` tells the processes apart, Ray's included)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}", _retries


def total_retries(reports: dict[str, int], *more: tuple[str, int]) -> int:
    """The job's retries: each process's newest count (counts only grow), summed."""
    latest = dict(reports)
    for process, count in more:
        latest[process] = max(latest.get(process, 0), count)
    return sum(latest.values())


def _count(response: dict[str, Any]) -> dict[str, Any]:
    _add_retries(int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0))
    return response


def _add_retries(n: int) -> None:
    global _retries
    if n:
        with _retries_lock:
            _retries += n


def outage_seconds() -> float:
    """``S3_OUTAGE_S``, or ``DJ_RUNNER_S3_OUTAGE_S`` when set (a number of seconds)."""
    text = os.environ.get(S3_OUTAGE_ENV, "").strip()
    try:
        seconds = float(text) if text else S3_OUTAGE_S
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise InvalidInput(f"{S3_OUTAGE_ENV}: got {text!r}; expected a number of seconds >= 0")
    return seconds


def _unreachable(exc: BaseException) -> bool:
    """The store could not be connected to: the request never reached it."""
    from botocore.exceptions import EndpointConnectionError

    return isinstance(exc, EndpointConnectionError)


@functools.lru_cache(maxsize=8)
def _client(endpoint: str | None, region: str | None, identity: tuple[str | None, ...]) -> Any:
    """One botocore S3 client per setting; ``identity`` only keys the cache."""
    import botocore.config
    import botocore.session

    session = botocore.session.get_session()
    config = botocore.config.Config(
        retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_REQUEST_TIMEOUT_S,
        s3={"addressing_style": "path"},
        # Checksums only where the API requires them: S3-compatible stores vary in the rest.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region or ("us-east-1" if endpoint else None),
        config=config,
    )


#: A process started with this set (a JSON ``S3Config``) makes its S3 client when this module
#: is imported: the local engine's fork server does, so its workers inherit a ready client
#: (making one costs about a second of CPU: botocore loads the S3 API's model).
WARM_ENV = "DJ_RUNNER_S3_WARM"


def warm_env() -> dict[str, str]:
    """The environment that makes a process started with it prepare this process's client."""
    options = current_s3_config()
    return {WARM_ENV: json.dumps({"endpoint_url": options.endpoint_url, "region": options.region})}


def _warm_from_env() -> None:
    raw = os.environ.get(WARM_ENV)
    if not raw:
        return
    try:
        configure_s3(S3Config(**json.loads(raw)))
        s3_client()
    except Exception:
        pass


def s3_client() -> Any:
    """The S3 client for this process's ``s3`` settings (``location.configure_s3``)."""
    options = current_s3_config()
    endpoint = endpoint_of(options)
    if endpoint and "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    identity = tuple(
        os.environ.get(n) for n in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ROLE_ARN")
    )
    return _client(endpoint, region_of(options), identity)


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3Error(RunnerError):
    """An S3 request of the work dir failed after its retries (the reason has no secret)."""


#: botocore's names of the conditions, as the HTTP headers they are sent as.
_HEADERS = {"IfNoneMatch": "If-None-Match: *", "IfMatch": "If-Match"}


class S3Blobs(Blobs):
    """The objects under ``s3://bucket/prefix``."""

    def __init__(self, uri: str) -> None:
        self.bucket, prefix = split_s3(uri, "work_dir")
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __reduce__(self) -> tuple[Any, ...]:  # sent to Ray workers by its URI
        return (S3Blobs, (self.uri,))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        """A bucket key's key relative to the work dir (``_key``'s inverse)."""
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _call(self, operation: str, key: str, **kwargs: Any) -> dict[str, Any]:
        """One request, with botocore's retries; while the store cannot be connected to at all,
        the request is tried again for up to ``S3_OUTAGE_S`` (waits of 1, 2, 4, ... 10 s)."""
        client = s3_client()
        deadline: float | None = None
        wait = 1.0
        while True:
            try:
                return _count(getattr(client, operation)(Bucket=self.bucket, **kwargs))
            except Exception as exc:
                if _code(exc) or _status(exc):
                    raise
                now = time.monotonic()
                if _unreachable(exc):
                    if deadline is None:
                        deadline = now + outage_seconds()
                    if now < deadline:
                        _add_retries(1)
                        time.sleep(min(wait, deadline - now))  # backoff, bounded by the deadline
                        wait = min(wait * 2, 10.0)
                        continue
                spent = f" and {outage_seconds():.0f} s unreachable" if deadline else ""
                raise S3Error(
                    f"{self.join(key)}: {operation} failed after {S3_MAX_ATTEMPTS} attempts"
                    f"{spent}: {scrub(str(exc))}"
                ) from None

    def _missing(self, exc: BaseException) -> bool:
        return _code(exc) in ("NoSuchKey", "404", "NotFound") or _status(exc) == 404

    def _fail(self, operation: str, key: str, exc: BaseException) -> S3Error:
        return S3Error(f"{self.join(key)}: {operation} failed: {scrub(str(exc))}")

    def read(self, key: str) -> bytes | None:
        got = self.read_versioned(key)
        return None if got is None else got[0]

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            resp = self._call("get_object", key, Key=self._key(key))
            return resp["Body"].read(), str(resp["ETag"])
        except S3Error:
            raise
        except Exception as exc:
            if self._missing(exc):
                return None
            raise self._fail("GetObject", key, exc) from None

    def _put(self, key: str, data: bytes, **conditions: str) -> str | None:
        try:
            resp = self._call("put_object", key, Key=self._key(key), Body=data, **conditions)
            return str(resp["ETag"])
        except S3Error:
            raise
        except Exception as exc:
            code, status = _code(exc), _status(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409,
                412,
            ):
                return None
            if conditions and (code == "NotImplemented" or status == 501):
                raise InvalidInput(
                    f"work_dir {self.uri}: this store does not support conditional writes "
                    f"({', '.join(_HEADERS[c] for c in conditions)} on PutObject), which a work dir in object storage "
                    "needs for its lease and commit logs; use a store that does (AWS S3, MinIO, "
                    "SeaweedFS, Ceph RGW) or a local work dir"
                ) from None
            raise self._fail("PutObject", key, exc) from None

    def write(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def create(self, key: str, data: bytes) -> str | None:
        return self._put(key, data, IfNoneMatch="*")

    def replace(self, key: str, data: bytes, version: str) -> str | None:
        return self._put(key, data, IfMatch=version)

    def size(self, key: str) -> int | None:
        try:
            return int(self._call("head_object", key, Key=self._key(key))["ContentLength"])
        except S3Error:
            raise
        except Exception as exc:
            if self._missing(exc):
                return None
            raise self._fail("HeadObject", key, exc) from None

    def list(self, prefix: str) -> list[Entry]:
        full = self._key(prefix.rstrip("/") + "/") if prefix else (self.prefix + "/").lstrip("/")
        out: list[Entry] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                resp = self._call("list_objects_v2", prefix, **kwargs)
            except S3Error:
                raise
            except Exception as exc:
                raise self._fail("ListObjectsV2", prefix, exc) from None
            for obj in resp.get("Contents", []):
                out.append(
                    Entry(
                        self._relative(obj["Key"]),
                        int(obj["Size"]),
                        obj["LastModified"].timestamp(),
                        str(obj.get("ETag", "")),
                    )
                )
            if not resp.get("IsTruncated"):
                break
            token = resp.get("NextContinuationToken")
        out.sort(key=lambda e: e.key)
        return out

    def delete(self, key: str) -> None:
        try:
            self._call("delete_object", key, Key=self._key(key))
        except S3Error:
            raise
        except Exception as exc:
            if not self._missing(exc):
                raise self._fail("DeleteObject", key, exc) from None

    def delete_many(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            if len(batch) == 1 or self.bucket in _no_batch_delete:
                super().delete_many(batch)
                continue
            objects = [{"Key": self._key(k)} for k in batch]
            try:
                resp = self._call(
                    "delete_objects", batch[0], Delete={"Objects": objects, "Quiet": True}
                )
            except S3Error:
                raise
            except Exception as exc:
                if _code(exc) == "NotImplemented" or _status(exc) == 501:
                    _no_batch_delete.add(self.bucket)
                    super().delete_many(batch)
                    continue
                raise self._fail("DeleteObjects", batch[0], exc) from None
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise S3Error(
                    f"{self.join(self._relative(str(first.get('Key', ''))))}: "
                    f"DeleteObjects failed for {len(errors)} of {len(batch)} objects: "
                    f"{first.get('Code')} {scrub(str(first.get('Message', '')))}"
                )

    def _log_id(self, log: str) -> tuple[str, str]:
        return (self.bucket, self._key(log))

    def append(self, log: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, sort_keys=True).encode()
        log_id = self._log_id(log)
        with _logs_lock:
            known = _logs.get(log_id)
        seq = len(known) if known is not None else len(self.records(log))
        for _ in range(1000):
            name = f"{seq:0{_SEQ_WIDTH}d}.json"
            if self.create(f"{log}/{name}", data) is not None:
                with _logs_lock:
                    mine = list(_logs.get(log_id, []))
                    _logs[log_id] = [*mine[:seq], (name, record)]
                return
            seq = max(seq + 1, len(self.records(log)))  # another writer took it
        raise S3Error(f"{self.join(log)}: could not append a record (1000 sequence numbers taken)")

    def records(self, log: str) -> list[dict[str, Any]]:
        """The log's records: one listing, and a read of each record not seen before (a
        record never changes once written; its ETag tells a rewritten name apart)."""
        out: list[tuple[str, dict[str, Any]]] = []
        for entry in self.list(log):
            name = entry.key.rsplit("/", 1)[-1]
            cache_key = (self.bucket, self._key(entry.key), entry.version)
            with _logs_lock:
                record = _record_cache.get(cache_key)
            if record is None:
                data = self.read(entry.key)
                try:
                    parsed = json.loads(data) if data is not None else None
                except ValueError:
                    parsed = None
                if not isinstance(parsed, dict):
                    continue
                record = parsed
                with _logs_lock:
                    _record_cache[cache_key] = record
            out.append((name, record))
        with _logs_lock:
            _logs[self._log_id(log)] = out
        return [r for _, r in out]

    def known_records(self, log: str) -> list[dict[str, Any]]:
        with _logs_lock:
            known = _logs.get(self._log_id(log))
        return [r for _, r in known] if known is not None else self.records(log)


#: Keys in one ``DeleteObjects`` request (the S3 API's limit).
_DELETE_BATCH = 1000
#: Buckets whose store answered ``DeleteObjects`` with 501: deleted one object at a time.
_no_batch_delete: set[str] = set()

#: What this process knows of each log in a bucket: its records in order, and every record it
#: has read, by key and ETag.
_logs: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
_record_cache: dict[tuple[str, str, str], dict[str, Any]] = {}
_logs_lock = threading.Lock()


# ------------------------------------------------------------------------------------ opening


def open_blobs(root: str | Path) -> Blobs:
    """The store of a work dir: ``S3Blobs`` for an ``s3://`` URI, else ``LocalBlobs``."""
    text = str(root)
    return S3Blobs(text) if is_s3(text) else LocalBlobs(text)


_warm_from_env()  # in a local engine's fork server: its workers inherit the client
