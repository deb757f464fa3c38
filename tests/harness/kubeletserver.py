"""The process node's small kubelet API: container logs, so `kubectl logs` works.

The apiserver proxies `GET /api/v1/namespaces/<ns>/pods/<pod>/log` to the node's kubelet
endpoint (`status.daemonEndpoints.kubeletEndpoint.Port` on its InternalIP). This server answers
`/containerLogs/<ns>/<pod>/<container>` (with `previous`, `follow`, `tailLines`, `limitBytes`)
and `/healthz`, over TLS, and only to clients with a certificate from the cluster's CA.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# (namespace, pod, container, previous) -> (log file, is the container running?)
LogLookup = Callable[[str, str, str, bool], tuple[Path, Callable[[], bool]]]


class _Handler(BaseHTTPRequestHandler):
    server: KubeletServer

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if parts == ["healthz"]:
            self._reply(200, b"ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._reply(404, b"not found")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            path, running = self.server.lookup(
                parts[1], parts[2], parts[3], query.get("previous") == "true"
            )
        except KeyError as exc:
            self._reply(404, str(exc).encode())
            return
        data = path.read_bytes() if path.exists() else b""
        if "tailLines" in query:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) else b""
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        if limit is not None:
            data = data[:limit]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        try:
            self.wfile.write(data)
            if query.get("follow") == "true" and limit is None:
                self._follow(path, path.stat().st_size if path.exists() else 0, running)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return

    def _follow(self, path: Path, offset: int, running: Callable[[], bool]) -> None:
        while not self.server.stopping.is_set():
            alive = running()
            size = path.stat().st_size if path.exists() else 0
            if size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(size - offset)
                offset = size
                self.wfile.write(chunk)
                self.wfile.flush()
            elif not alive:
                return
            else:
                time.sleep(0.2)

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class KubeletServer(ThreadingHTTPServer):
    """TLS server on 127.0.0.1; `port` is what the Node advertises."""

    daemon_threads = True

    def __init__(self, lookup: LogLookup, cert: tuple[Path, Path], client_ca: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lookup = lookup
        self.stopping = threading.Event()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert[0]), str(cert[1]))
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.port = int(self.server_address[1])
        self._thread = threading.Thread(target=self.serve_forever, name="kubelet-api", daemon=True)

    def start(self) -> KubeletServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
