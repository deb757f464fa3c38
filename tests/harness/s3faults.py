"""A fault-injecting HTTP proxy between an S3 client and the test server.

``FaultProxy(upstream)`` listens on a free loopback port and forwards each HTTP/1.1 request to
``upstream`` unchanged (the ``Host`` header too, so SigV4 signatures still verify). On command
from a test it answers the next N requests (optionally only those of one method) itself:

- ``fail_next(n)``: ``503 SlowDown`` with S3's XML error body, as S3 does when throttling;
- ``delay_next(n, seconds)``: forwards, but holds the answer back first;
- ``reset_next(n)``: closes the client's connection with a TCP reset instead of answering.

``refuse_conditional`` and ``refuse_batch_delete`` answer every conditional write, or every
``DeleteObjects``, with ``501 NotImplemented``, as a store without them does.

``faults_injected`` and ``requests_seen`` count, so a test can assert that its faults were hit
and then retried; ``log`` keeps each request's method, path and ``Range`` header, so a test can
see how a client read an object. A request the proxy answers itself is never forwarded.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass

from tests.harness.waiting import wait_for

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)

_NOT_IMPLEMENTED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NotImplemented</Code>'
    b"<Message>A header you provided implies functionality that is not implemented."
    b"</Message></Error>"
)


@dataclass
class _Rule:
    kind: str  # fail | delay | reset
    remaining: int
    method: str | None
    seconds: float = 0.0


class FaultProxy:
    """A threaded proxy; use as a context manager or call ``close``."""

    def __init__(self, upstream: str) -> None:
        url = urllib.parse.urlsplit(upstream)
        self._upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.requests_seen = 0
        self.faults_injected = 0
        self.methods_failed: list[str] = []
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        #: Answer every conditional request (If-None-Match, If-Match) with 501 NotImplemented,
        #: as a store without conditional writes does.
        self.refuse_conditional = False
        #: Answer every ``DeleteObjects`` (``POST ?delete``) with 501 NotImplemented.
        self.refuse_batch_delete = False
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                with proxy._lock:
                    proxy.log.append((self.command, self.path, self.headers.get("Range")))
                conditional = any(h.lower() in ("if-none-match", "if-match") for h in self.headers)
                batch_delete = self.command == "POST" and "delete" in self.path.split("?", 1)[-1]
                if (proxy.refuse_conditional and conditional) or (
                    proxy.refuse_batch_delete and batch_delete
                ):
                    self.send_response(501, "Not Implemented")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_NOT_IMPLEMENTED)))
                    self.end_headers()
                    self.wfile.write(_NOT_IMPLEMENTED)
                    return
                rule = proxy._take(self.command)
                if rule is not None and rule.kind == "reset":
                    # SO_LINGER 0: close() sends RST, not FIN
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if rule is not None and rule.kind == "fail":
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(_SLOW_DOWN)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy._upstream, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if rule is not None and rule.kind == "delay":
                        time.sleep(rule.seconds)  # the fault itself: a slow answer
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    length = resp.getheader("Content-Length")
                    if self.command == "HEAD" and length is not None:
                        self.send_header("Content-Length", length)
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                return  # a reset connection (injected, or the client's) is not an error here

        self._server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, method: str) -> _Rule | None:
        with self._lock:
            self.requests_seen += 1
            for rule in self._rules:
                if rule.remaining > 0 and (rule.method is None or rule.method == method):
                    rule.remaining -= 1
                    self.faults_injected += 1
                    self.methods_failed.append(method)
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def fail_next(self, n: int, method: str | None = None) -> None:
        """Answer the next ``n`` requests (of ``method``, if given) with 503 SlowDown."""
        with self._lock:
            self._rules.append(_Rule("fail", n, method))

    def delay_next(self, n: int, seconds: float, method: str | None = None) -> None:
        """Hold back the answers to the next ``n`` requests by ``seconds`` each."""
        with self._lock:
            self._rules.append(_Rule("delay", n, method, seconds))

    def reset_next(self, n: int, method: str | None = None) -> None:
        """Reset the connection of the next ``n`` requests instead of answering them."""
        with self._lock:
            self._rules.append(_Rule("reset", n, method))

    def pending(self) -> int:
        """Faults commanded but not yet injected."""
        with self._lock:
            return sum(r.remaining for r in self._rules)

    def wait_drained(self, timeout: float = 30.0) -> None:
        """Wait until every commanded fault has been injected."""
        wait_for(lambda: self.pending() == 0, timeout=timeout, what="the proxy's faults to be hit")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
