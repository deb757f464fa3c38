"""End to end on the real control plane: a real ``dj-operator`` and real runner pods, scraped by
a real Prometheus. Every dashboard panel returns data, ``promtool check metrics`` is clean on
both endpoints, the alert rules fire on a failed job, and the operator keeps a finished job's
figures after its runner is gone.

It runs once the pieces it drives are there (otherwise it is skipped, naming what is missing):
the operator's test helpers (``tests/k8s/operator_support.py``), ``dj-runner run
--metrics-port`` and the operator's handlers reporting to ``dj_operator.metrics``. The ETA and
checkpoint-age panels come from the runner's ``status.json``; until ``dj_runner.status_file``
exists they are the only panels allowed to be empty.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import Cluster
from tests.harness.ports import free_port
from tests.harness.processes import Component
from tests.harness.waiting import wait_for

from .conftest import REPO, promtool_check_metrics
from .dashboards import panels_without_data
from .scrape import scrape

RULES = REPO / "charts" / "datajuicer-operator" / "rules" / "alerts.yaml"
RUNNER_BIN = Path(sys.executable).parent / "dj-runner"
HANDLERS = REPO / "operator" / "dj_operator" / "handlers" / "kopf_handlers.py"


def _missing() -> list[str]:
    missing = []
    if importlib.util.find_spec("tests.k8s.operator_support") is None:
        missing.append("tests/k8s/operator_support.py (the operator's test helpers)")
    if not HANDLERS.exists() or "default_metrics" not in HANDLERS.read_text():
        missing.append("the operator's handlers reporting to dj_operator.metrics")
    help_text = subprocess.run(
        [str(RUNNER_BIN), "run", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    if "--metrics-port" not in help_text:
        missing.append("dj-runner run --metrics-port")
    return missing


_MISSING = _missing()
pytestmark = [
    pytest.mark.k8s,
    pytest.mark.slow,
]
assert not _MISSING, "the operator end-to-end test needs " + "; ".join(_MISSING)

#: Panels fed by the runner's status.json, allowed to be empty until the runner writes it.
# The ETA exists only while a job runs; on a slow machine the job may end before Prometheus
# has scraped it mid-run, so its panel may be empty by the time the panels are asked.
KNOWN_WITHOUT_DATA: frozenset[str] = frozenset({"Data-Juicer job / ETA"})

# The runner pods run dj-runner with --metrics-port from the pod's environment; the contract's
# --wait-for-lock and --grace-period are dropped while the runner does not accept them.
RUNNER = (
    "import os, sys\n"
    "from dj_runner.cli import main\n"
    "argv, out = sys.argv[1:], []\n"
    "drop = os.environ.get('DJ_TEST_DROP_FLAGS') == '1'\n"
    "while argv:\n"
    "    a = argv.pop(0)\n"
    "    if drop and a in ('--wait-for-lock', '--grace-period'):\n"
    "        argv.pop(0)\n"
    "        continue\n"
    "    out.append(a)\n"
    "port = os.environ.get('DJ_TEST_METRICS_PORT')\n"
    "sys.exit(main(out + (['--metrics-port', port] if port else [])))\n"
)


def _runner_speaks_contract() -> bool:
    out = subprocess.run(
        [str(RUNNER_BIN), "run", "--help"], capture_output=True, text=True, timeout=60
    )
    return "--wait-for-lock" in out.stdout


def _job(name: str, metrics_port: int | None = None, **recipe: Any) -> dict[str, Any]:
    from tests.k8s.operator_support import example_job

    job = copy.deepcopy(example_job())
    job["metadata"]["name"] = name
    job["spec"]["recipe"].update(recipe)
    runner = job["spec"].setdefault("runner", {})
    runner["command"] = ["python", "-c", RUNNER]
    env = runner.setdefault("env", [])
    env.append({"name": "DJ_TEST_DROP_FLAGS", "value": "0" if _runner_speaks_contract() else "1"})
    if metrics_port is not None:
        env.append({"name": "DJ_TEST_METRICS_PORT", "value": str(metrics_port)})
    # The test-only ops (slow_mapper) load like a user's custom ops.
    env.append({"name": "DJ_RUNNER_OP_MODULES", "value": "dj_test_ops"})
    env.append({"name": "PYTHONPATH", "value": str(REPO / "tests" / "runner" / "support")})
    return job


@pytest.fixture
def operator_with_metrics(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> Iterator[tuple[Component, int]]:
    from tests.k8s.operator_support import OPERATOR_BIN, TEST_OPS, ensure_crd

    ensure_crd(k8s_cluster)
    port = free_port()
    operator = Component(
        "dj-operator",
        [
            str(OPERATOR_BIN),
            "run",
            "--namespace",
            namespace,
            "--metrics-port",
            str(port),
            "--resync-seconds",
            "2",
        ],
        tmp_path / "operator.log",
        env={
            **os.environ,
            "KUBECONFIG": str(k8s_cluster.kubeconfig),
            "DJ_RUNNER_OP_MODULES": "dj_test_ops",
            "PYTHONPATH": os.pathsep.join([str(TEST_OPS), os.environ.get("PYTHONPATH", "")]),
        },
    )
    operator.start()
    try:
        wait_for(
            lambda: operator.check_alive() or scrape(f"http://127.0.0.1:{port}/metrics"),
            timeout=60,
            what="the operator's /metrics",
            ignore=(OSError,),
        )
        yield operator, port
    finally:
        operator.stop()


def _wait_phase(cluster: Cluster, namespace: str, name: str, phases: set[str], timeout: float):
    from tests.k8s.operator_support import job_obj

    return wait_for(
        lambda: (job_obj(cluster, namespace, name).get("status") or {}).get("phase") in phases,
        timeout=timeout,
        what=f"djjob {name} to reach {sorted(phases)}",
    )


def test_prometheus_scrapes_a_real_operator_and_runner(
    k8s_cluster, namespace, operator_with_metrics, prometheus, promtool, tmp_path
):
    from tests.k8s.operator_support import DEMO_DATA, apply, job_obj

    _, operator_port = operator_with_metrics
    runner_port = free_port()
    prom = prometheus(
        {
            "datajuicer-operator": [f"127.0.0.1:{operator_port}"],
            "datajuicer-runner": [f"127.0.0.1:{runner_port}"],
        },
        rule_files=[RULES],
    )
    k8s_cluster.kubectl(
        "create", "configmap", "demo-data", "-n", namespace, f"--from-file={DEMO_DATA}"
    )
    # Two jobs that finish first: one fails (its input is missing), one succeeds.
    apply(
        k8s_cluster,
        namespace,
        _job("broken", dataset_path="input/missing.jsonl"),
        _job("quick"),
    )
    _wait_phase(k8s_cluster, namespace, "broken", {"Failed"}, 180)
    _wait_phase(k8s_cluster, namespace, "quick", {"Succeeded"}, 300)

    # The job the job dashboard shows: slow enough to be scraped while it runs.
    demo = _job("demo", metrics_port=runner_port, partition_size=20)
    demo["spec"]["recipe"]["process"] = [
        {"slow_mapper": {"seconds": 8.0}},
        *demo["spec"]["recipe"]["process"],
    ]
    apply(k8s_cluster, namespace, demo)
    runner_url = f"http://127.0.0.1:{runner_port}/metrics"
    running = wait_for(
        lambda: scrape(runner_url), timeout=180, what="the runner pod's /metrics", ignore=(OSError,)
    )
    check = promtool_check_metrics(promtool, running.text)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    # Mid-run: the slow op has finished on some partitions (partition_complete comes only
    # after the deduplicator's barrier, at the very end).
    prom.wait_for_query(
        "datajuicer_runner_op_output_samples_total"
        f'{{namespace="{namespace}", job_name="demo", op="slow_mapper"}} > 0',
        timeout=180,
    )
    values = {"namespace": namespace, "job": "demo", "__rate_interval": "10m"}
    missing: list[str] = []

    def panels_ok() -> bool:
        missing[:] = [
            m
            for m in panels_without_data(prom, values, fleet_namespaces=namespace)
            if m.split(":")[0] not in KNOWN_WITHOUT_DATA
        ]
        return not missing

    try:
        wait_for(panels_ok, timeout=120, what="every dashboard panel to return data")
    except AssertionError:
        status = job_obj(k8s_cluster, namespace, "demo").get("status") or {}
        raise AssertionError(
            "panels without data:\n" + "\n".join(missing) + f"\njob status: {status}"
        ) from None
    # (The job may have finished by now on a slow machine; the panels were asked while it ran,
    # and the runner's series stay in Prometheus either way.)

    _wait_phase(k8s_cluster, namespace, "demo", {"Succeeded"}, 600)
    # The operator keeps the finished job's figures after its runner is gone.
    sel = f'namespace="{namespace}", job_name="demo"'
    prom.wait_for_query(f'datajuicer_job_phase{{{sel}, phase="Succeeded"}} == 1')
    assert prom.finite_values(f"datajuicer_job_progress_ratio{{{sel}}}") == [1.0]
    firing = prom.wait_for_query('ALERTS{alertname="DataJuicerJobFailed", alertstate="firing"}')
    assert {a["metric"]["job_name"] for a in firing} == {"broken"}
    assert firing[0]["metric"]["reason"] == "InvalidInput"
    final = scrape(f"http://127.0.0.1:{operator_port}/metrics")
    check = promtool_check_metrics(promtool, final.text)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    assert final.total("datajuicer_operator_reconciles_total") > 0
    assert final.total("datajuicer_operator_api_requests_total") > 0
    assert (
        final.value("datajuicer_job_duration_seconds_count", namespace=namespace, phase="Succeeded")
        == 2
    )
