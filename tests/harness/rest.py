"""A small JSON REST client of the Kubernetes API for the harness itself.

The harness (process node, readiness checks) works on plain dicts and needs exact control over
patch types and watches, so it talks HTTP through urllib3 directly. Tests use the official
`kubernetes` client through `Cluster.api_client()`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

Obj = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer of the apiserver."""

    def __init__(self, status: int, body: str, method: str, path: str) -> None:
        self.status = status
        self.body = body
        try:
            self.reason = json.loads(body).get("reason", "")
        except ValueError:
            self.reason = ""
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")


class Rest:
    """JSON over HTTPS to one apiserver, authenticated by client certificate or bearer token."""

    def __init__(
        self,
        server: str,
        ca_file: Path,
        cert: tuple[Path, Path] | None = None,
        token: str | None = None,
        pool_size: int = 16,
    ) -> None:
        self.server = server.rstrip("/")
        context = ssl.create_default_context(cafile=str(ca_file))
        if cert:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._pool = urllib3.PoolManager(maxsize=pool_size, ssl_context=context, retries=False)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        url = self.server + path + (("?" + urlencode(params)) if params else "")
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        resp = self._pool.request(
            method, url, body=data, headers=headers, timeout=timeout, preload_content=True
        )
        text = resp.data.decode("utf-8", "replace")
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, text, method, path)
        return json.loads(text) if text else None

    def raw_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET a non-JSON endpoint (e.g. /readyz): status and body text."""
        resp = self._pool.request("GET", self.server + path, headers=self._headers, timeout=timeout)
        return resp.status, resp.data.decode("utf-8", "replace")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("POST", path, body, params=params or None)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 60) -> Iterator[Obj]:
        """Stream watch events ({"type", "object"}) of a collection from `resource_version`."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        url = f"{self.server}{path}?{urlencode(params)}"
        resp = self._pool.request(
            "GET",
            url,
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=timeout_seconds + 15),
        )
        try:
            if resp.status != 200:
                raise ApiError(resp.status, resp.read().decode("utf-8", "replace"), "WATCH", path)
            buffer = b""
            for chunk in resp.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()
