"""A real Prometheus for tests: free port, private data dir, 1 s scrapes, stopped for sure.

``prometheus`` (the fixture) is a factory: ``prometheus({"runner": ["127.0.0.1:9100"]},
rule_files=[...])`` writes a config, starts the server, waits until ``/-/ready`` answers and
returns a ``Prometheus`` with ``query``/``label_values`` helpers over the HTTP API. Every
server started is stopped at the end of the test.
"""

from __future__ import annotations

import json
import math
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.ports import free_port
from tests.harness.processes import Component
from tests.harness.waiting import wait_for

PROMETHEUS_MISSING = (
    "prometheus is not on PATH: install it (Debian/Ubuntu: apt-get install -y prometheus) "
    "to run the dashboard and scrape tests against a real Prometheus"
)


class PrometheusError(AssertionError):
    """The HTTP API answered with an error."""


@dataclass
class Prometheus:
    url: str
    component: Component
    config_path: Path

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            raise PrometheusError(
                f"{path} {params}: HTTP {exc.code}: {exc.read()[:500]!r}"
            ) from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query now: the result vector (a scalar comes back as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr}: expected a vector, got {data['resultType']}")
        return data["result"]

    def finite_values(self, expr: str) -> list[float]:
        values = [float(s["value"][1]) for s in self.query(expr)]
        return [v for v in values if math.isfinite(v)]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", **{"match[]": match})

    def targets_up(self) -> dict[str, bool]:
        """Each scrape target's ``scrapeUrl`` and whether its last scrape succeeded."""
        active = self.api("targets")["activeTargets"]
        return {t["scrapeUrl"]: t["health"] == "up" for t in active}

    def wait_up(self, n_targets: int, timeout: float = 30) -> None:
        wait_for(
            lambda: (lambda t: len(t) == n_targets and all(t.values()))(self.targets_up()),
            timeout=timeout,
            what=f"Prometheus to scrape its {n_targets} targets successfully",
        )

    def wait_for_query(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns at least one sample; the samples."""
        return wait_for(
            lambda: self.query(expr), timeout=timeout, what=f"Prometheus to return data for {expr}"
        )


def prometheus_config(
    targets: dict[str, list[str]], rule_files: list[Path], interval: str = "1s"
) -> dict[str, Any]:
    """Scrape each job's targets every ``interval``; keep the labels the endpoints expose
    (``honor_labels``: the ``namespace`` label is the job's, not the target's)."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "honor_labels": True,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "static_configs": [{"targets": addresses}],
            }
            for job, addresses in targets.items()
        ],
    }


def start_prometheus(
    work: Path, targets: dict[str, list[str]], rule_files: list[Path] = ()
) -> Prometheus:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(PROMETHEUS_MISSING)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, list(rule_files))))
    port = free_port()
    component = Component(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        work / "prometheus.log",
    )
    component.start()
    server = Prometheus(f"http://127.0.0.1:{port}", component, config)

    def ready() -> bool:
        component.check_alive()
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_for(ready, timeout=60, what=f"prometheus on port {port} to be ready")
    except BaseException:
        component.stop()
        raise
    return server


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    started: list[Prometheus] = []

    def start(targets: dict[str, list[str]], rule_files: list[Path] = ()) -> Prometheus:
        server = start_prometheus(tmp_path / f"prometheus-{len(started)}", targets, rule_files)
        started.append(server)
        return server

    yield start
    for server in started:
        server.component.stop()
