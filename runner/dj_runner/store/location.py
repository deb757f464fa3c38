"""Where a dataset, an export or a work dir lives: a local path or an ``s3://bucket/key`` URI.

``resolve`` turns either into a ``Location``: a pyarrow ``FileSystem`` and the path inside it.
Local paths use ``LocalFileSystem``; ``s3://`` URIs use pyarrow's ``S3FileSystem`` with:

- credentials from the standard AWS chain, which the AWS SDK inside pyarrow walks:
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the
  shared config and credentials files, web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` with
  ``AWS_ROLE_ARN``), and instance metadata. The runner never reads or stores a secret itself,
  with one exception: web identity against a configured STS endpoint (``AWS_ENDPOINT_URL_STS``
  or ``AWS_ENDPOINT_URL``, a store's own STS). The SDK inside pyarrow takes that endpoint for a
  host name on port 443 (aws-c-auth's web identity provider), so it cannot reach
  ``http://host:port``: botocore assumes the role instead (the same chain the work dir's client
  uses, refreshed before expiry) and pyarrow's client is given the temporary keys, in memory
  only (``web_identity_keys``). Against AWS's own STS nothing of this applies;
- the endpoint from the recipe's ``s3.endpoint_url``, else ``AWS_ENDPOINT_URL``, else AWS;
  the region from ``s3.region``, else ``AWS_REGION``/``AWS_DEFAULT_REGION``, else the SDK's;
- transient errors (503 SlowDown, throttling, resets, 5xx) retried by the SDK's standard retry
  strategy: at most ``S3_MAX_ATTEMPTS`` attempts per request, exponential backoff with jitter,
  bounded by the SDK (20 s a wait). pyarrow does not report the retries it made, so the runner
  cannot count them (the tests count them at a fault-injecting proxy);
- buckets are never created or deleted by the runner.

``check_readable`` and ``check_writable_prefix`` are the preflight: a missing bucket, a refused
credential or a missing permission is an ``InvalidInput`` (exit 2) naming the bucket and the
S3 operation, before any work. No message carries a secret: the reason pyarrow gives is
scrubbed of every credential value the process's environment holds.

``configure_s3`` sets the recipe's ``s3`` block for this process: the CLI and the ``Executor``
in the driver, and each Ray worker before it reads a partition. S3 clients are built from it
and cached per setting.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs as pafs

from dj_runner.errors import InvalidInput, RecipeError

S3_SCHEME = "s3://"
#: Attempts per S3 request (the first and its retries) under the SDK's standard strategy.
S3_MAX_ATTEMPTS = 10
S3_CONNECT_TIMEOUT_S = 10.0
#: How long a work-dir request keeps trying a store it cannot connect to (a restart, a
#: failover) once those attempts are spent (DJ_RUNNER_S3_OUTAGE_S): a refused connection never
#: reached the store, so trying again cannot apply a write twice.
S3_OUTAGE_ENV = "DJ_RUNNER_S3_OUTAGE_S"
S3_OUTAGE_S = 120.0
S3_REQUEST_TIMEOUT_S = 60.0
#: Environment variables whose values are secrets: scrubbed from every message.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
#: S3's bucket naming rules (the common subset: 3-63 lower-case letters, digits, dots, dashes).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Location:
    """A place the runner reads or writes: ``path`` inside ``fs``.

    ``uri`` is what the user wrote (normalised); for S3, ``path`` is ``bucket/key``.
    """

    uri: str
    fs: pafs.FileSystem
    path: str
    bucket: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None


@dataclass(frozen=True)
class S3Config:
    """The recipe's ``s3`` block: where ``s3://`` paths are served. Never a credential."""

    endpoint_url: str | None = None
    region: str | None = None


_options = S3Config()
_options_lock = threading.Lock()


def configure_s3(options: S3Config) -> None:
    """Use ``options`` (the recipe's ``s3`` block) for this process's S3 clients."""
    global _options
    with _options_lock:
        _options = options


def current_s3_config() -> S3Config:
    """This process's ``s3`` settings (``configure_s3``)."""
    return _options


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def split_s3(uri: str, key: str = "dataset_path") -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; ``key`` names the recipe key in errors."""
    rest = uri[len(S3_SCHEME) :]
    bucket, _, obj = rest.partition("/")
    if "@" in bucket:  # s3://KEY:SECRET@bucket: never echoed
        raise RecipeError(
            key,
            "s3://<hidden>@...",
            "an s3:// URI without credentials in it; the runner takes them from the environment",
        )
    if not _BUCKET.match(bucket):
        raise RecipeError(
            key,
            uri,
            "s3://BUCKET/PREFIX with a bucket name of 3-63 lower-case letters, digits, dots "
            "and dashes",
        )
    return bucket, obj


def endpoint_of(options: S3Config) -> str | None:
    return (
        options.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def region_of(options: S3Config) -> str | None:
    return options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def web_identity_endpoint() -> str | None:
    """The STS endpoint that web identity is assumed at when it is not AWS's own: set when the
    chain is web identity (``AWS_ROLE_ARN`` and ``AWS_WEB_IDENTITY_TOKEN_FILE``, no access key
    or profile before it) and ``AWS_ENDPOINT_URL_STS`` or ``AWS_ENDPOINT_URL`` is set."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE"):
        return None
    if not (env.get("AWS_ROLE_ARN") and env.get("AWS_WEB_IDENTITY_TOKEN_FILE")):
        return None
    return env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL") or None


@functools.lru_cache(maxsize=4)
def _web_identity_credentials(role_arn: str, token_file: str, endpoint: str) -> Any:
    """botocore's refreshable credentials of the web identity chain (one per setting)."""
    import botocore.session

    return botocore.session.get_session().get_credentials()


def web_identity_keys() -> tuple[str, str, str] | None:
    """The temporary keys of the web identity chain, assumed by botocore at a configured STS
    endpoint (``web_identity_endpoint``), else None (pyarrow's SDK walks the chain itself).

    botocore refreshes them 15 minutes before they expire, so keys taken here are good for at
    least 10 minutes. A refused assumption (a token of the wrong audience, a role that does not
    trust it) is an ``InvalidInput`` naming the role, the endpoint and the store's reason; never
    the token or a key.
    """
    endpoint = web_identity_endpoint()
    if endpoint is None:
        return None
    role = os.environ["AWS_ROLE_ARN"]
    token_file = os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"]
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        creds = _web_identity_credentials(role, token_file, endpoint)
        frozen = creds.get_frozen_credentials() if creds is not None else None
    except (BotoCoreError, ClientError, OSError) as exc:
        raise InvalidInput(
            f"web identity: cannot assume role {role} (AssumeRoleWithWebIdentity at "
            f"{endpoint}, token from AWS_WEB_IDENTITY_TOKEN_FILE): {scrub(str(exc))}"
        ) from None
    if frozen is None or not frozen.access_key:
        raise InvalidInput(
            f"web identity: no credentials for role {role} (AssumeRoleWithWebIdentity at "
            f"{endpoint})"
        )
    return frozen.access_key, frozen.secret_key, frozen.token


def s3_filesystem(options: S3Config | None = None) -> pafs.S3FileSystem:
    """The S3 client for ``options`` (default: this process's, see ``configure_s3``)."""
    opts = options if options is not None else _options
    # which identity the SDK's chain starts from (names, never secrets) is part of the cache key
    identity = (os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))
    return _s3_filesystem(endpoint_of(opts), region_of(opts), identity, web_identity_keys())


@functools.lru_cache(maxsize=8)
def _s3_filesystem(
    endpoint: str | None,
    region: str | None,
    identity: tuple[str | None, str | None],
    keys: tuple[str, str, str] | None,
) -> pafs.S3FileSystem:
    """One client per setting; ``identity`` only keys the cache (the SDK reads the chain);
    ``keys``, the web identity's temporary keys (``web_identity_keys``), are given to it: a
    refresh of them makes a new client."""
    import pyarrow.fs as pafs

    kwargs: dict[str, object] = {}
    if keys is not None:
        kwargs.update(access_key=keys[0], secret_key=keys[1], session_token=keys[2])
    if endpoint:
        url = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if url.scheme not in ("http", "https") or not url.netloc:
            raise RecipeError(
                "s3.endpoint_url", endpoint, "an http:// or https:// URL (host and port)"
            )
        kwargs["endpoint_override"] = url.netloc + url.path.rstrip("/")
        kwargs["scheme"] = url.scheme
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        request_timeout=S3_REQUEST_TIMEOUT_S,
        allow_bucket_creation=False,
        allow_bucket_deletion=False,
        **kwargs,  # type: ignore[arg-type]
    )


def resolve(uri: str, key: str = "dataset_path") -> Location:
    """The filesystem and path of a local path or an ``s3://`` URI."""
    import pyarrow.fs as pafs

    if is_s3(uri):
        bucket, obj = split_s3(uri, key)
        return Location(uri, s3_filesystem(), f"{bucket}/{obj}".rstrip("/"), bucket)
    path = os.path.abspath(os.path.expanduser(uri))
    return Location(path, pafs.LocalFileSystem(), path)


def scrub(text: str) -> str:
    """``text`` without any secret the environment holds (replaced by ``<redacted>``)."""
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "<redacted>")
    return text


def s3_error(key: str, loc: Location, operation: str, exc: BaseException) -> InvalidInput:
    """A preflight failure as a clear error: the key, the bucket, the operation, the reason."""
    reason = scrub(str(exc))
    hint = ""
    if (
        "ACCESS_DENIED" in reason
        or "InvalidAccessKeyId" in reason
        or "SignatureDoesNotMatch" in reason
    ):
        hint = (
            " (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
            "the role, and that they may " + operation + " in this bucket)"
        )
    return InvalidInput(
        f"{key} {loc.uri}: cannot {operation} in bucket '{loc.bucket}': {reason}{hint}"
    )


def _check_bucket(key: str, loc: Location) -> None:
    import pyarrow.fs as pafs

    try:
        info = loc.fs.get_file_info(loc.bucket)
    except OSError as exc:
        raise s3_error(key, loc, "read (HeadBucket)", exc) from None
    if info.type == pafs.FileType.NotFound:
        raise InvalidInput(
            f"{key} {loc.uri}: bucket '{loc.bucket}' does not exist (HeadBucket); the runner "
            "never creates buckets"
        )


def check_readable(key: str, loc: Location) -> None:
    """Preflight of an input: the bucket exists and its prefix can be listed."""
    import pyarrow.fs as pafs

    if not loc.is_s3:
        return
    _check_bucket(key, loc)
    try:
        loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=False))
    except OSError as exc:
        raise s3_error(key, loc, "list objects (ListObjectsV2)", exc) from None


def check_writable_prefix(key: str, loc: Location) -> None:
    """Preflight of an output: the bucket exists and an object can be written under ``loc``.

    Writes a small probe object beside the target and deletes it (the runner's own object).
    """
    if not loc.is_s3:
        return
    _check_bucket(key, loc)
    name = f".dj-runner-probe-{uuid.uuid4().hex}"
    target = loc.path.rstrip("/")
    # beside the target, in its bucket
    probe = f"{target}{name}" if "/" in target else f"{target}/{name}"
    try:
        with loc.fs.open_output_stream(probe) as fh:
            fh.write(b"probe")
    except OSError as exc:
        raise s3_error(key, loc, "write (PutObject)", exc) from None
    try:
        loc.fs.delete_file(probe)
    except OSError as exc:
        raise s3_error(key, loc, "delete its own probe object (DeleteObject)", exc) from None
