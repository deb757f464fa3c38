"""Connecting to Ray: the recipe's or ``RAY_ADDRESS``'s cluster, or an embedded local Ray."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)
_EMBEDDED = False


@dataclass(frozen=True)
class RayConnection:
    address: str  # "embedded" or the address connected to
    cpus: int


def connect(address: str | None, num_cpus: int | None) -> RayConnection:
    """Connect to Ray once per process.

    ``None``/``local``: start an embedded Ray. ``auto``: join the running cluster, or start
    an embedded one when none runs. ``ray://host:port`` or ``host:port``: join that cluster.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        common = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address in (None, "local"):
            _embedded(num_cpus, common)
            address = "embedded"
        elif address == "auto":
            try:
                ray.init(address="auto", **common)
            except (ConnectionError, RuntimeError):
                log.info("no running Ray cluster found; starting an embedded one")
                os.environ.pop("RAY_ADDRESS", None)
                _embedded(num_cpus, common)
                address = "embedded"
        else:
            ray.init(address=address, **common)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return RayConnection(address or "embedded", max(1, cpus))


def is_embedded() -> bool:
    """Whether this process started its own Ray (rather than joining a cluster)."""
    import ray

    return _EMBEDDED and ray.is_initialized()


def _embedded(num_cpus: int | None, common: dict) -> None:
    """A private Ray for this process, reachable on loopback only."""
    import ray

    global _EMBEDDED
    _EMBEDDED = True
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **common)
