"""Raw S3 requests signed with AWS Signature Version 4, for what a filesystem API cannot say.

The tests use pyarrow's ``S3FileSystem`` for ordinary reads and writes; this module sends the
requests it has no words for (a conditional ``PutObject`` with ``If-None-Match``/``If-Match``,
an object listing with a given page size) so that a test can see the server's own answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Credentials:
    """An access key pair; ``repr`` never shows the secret."""

    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key=<hidden>)"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_request(
    endpoint: str,
    creds: Credentials,
    region: str,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
) -> Response:
    """Send one path-style S3 request to ``endpoint`` (``http://host:port``) and return the answer."""
    url = urllib.parse.urlsplit(endpoint)
    host = url.netloc
    now = dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    all_headers = {
        "host": host,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    canonical_path = urllib.parse.quote(path, safe="/-_.~")
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted((query or {}).items())
    )
    names = sorted(all_headers)
    canonical_headers = "".join(f"{n}:{all_headers[n].strip()}\n" for n in names)
    signed = ";".join(names)
    canonical = "\n".join(
        [method, canonical_path, canonical_query, canonical_headers, signed, payload_hash]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + creds.secret_key).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        target = canonical_path + (f"?{canonical_query}" if canonical_query else "")
        conn.request(method, target, body=body, headers=all_headers)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
