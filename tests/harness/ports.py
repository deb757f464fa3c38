"""Free TCP ports for the harness and for the Ray clusters that tests start.

A port that is free now may be taken before its user binds it (another process on the host, a
client's ephemeral port). Three things keep that rare, and the control plane retries a component
whose bind failed (see controlplane.py):

- ports are drawn from 20000 up to the start of the kernel's ephemeral range, so outgoing
  connections (which take ephemeral ports) never hold them, and they stay clear of Ray's worker
  port range (10002-19999), which Ray refuses for its own components;
- a port is checked free on every address (Ray's GCS binds `*`);
- within this process, a port is never handed out twice.
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

LOWEST_PORT = 20000
# Ray's default worker port range (`--min-worker-port`/`--max-worker-port`): Ray refuses these
# for the GCS and the Ray Client server.
RAY_WORKER_PORTS = range(10002, 20000)
_FALLBACK_EPHEMERAL_LOW = 32768

_lock = threading.Lock()
_handed_out: set[int] = set()
_random = random.SystemRandom()


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (`ip_local_port_range`)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_LOW
    return low if low > LOWEST_PORT + 1000 else _FALLBACK_EPHEMERAL_LOW


def is_free(port: int) -> bool:
    """True if nothing listens on `port` on any address now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port that is free now, below the ephemeral range, not handed out before here."""
    high = ephemeral_low()
    with _lock:
        for _ in range(1000):
            port = _random.randrange(LOWEST_PORT, high)
            if port in _handed_out or port in RAY_WORKER_PORTS:
                continue
            if is_free(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port found in {LOWEST_PORT}-{high - 1} after 1000 tries")


@dataclass(frozen=True)
class RayPorts:
    """The fixed ports of one Ray cluster's head: what makes two clusters on one host distinct.

    `ray_start_params()` gives the head group's `rayStartParams`, `container_ports()` the head
    container's `ports` (KubeRay copies them into the head Service, whose ports must equal the
    real ones on the process node).
    """

    gcs: int
    client: int

    def ray_start_params(self) -> dict[str, str]:
        return {"port": str(self.gcs), "ray-client-server-port": str(self.client)}

    def container_ports(self) -> list[dict[str, object]]:
        return [
            {"name": "gcs-server", "containerPort": self.gcs},
            {"name": "client", "containerPort": self.client},
        ]


def free_ray_ports() -> RayPorts:
    """GCS and Ray Client ports for one more Ray cluster on this host, outside Ray's worker range."""
    return RayPorts(gcs=free_port(), client=free_port())
