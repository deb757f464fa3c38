"""End to end on the real control plane: a real ``dj-operator`` and real runner pods, scraped by
a real Prometheus. Every dashboard panel returns data, ``promtool check metrics`` is clean on
both endpoints, the alert rules fire on a failed job, and the operator keeps a finished job's
figures after its runner is gone.

The job the dashboards show is held at a gate (a test op that waits for a file) with nine of its
ten partitions done, so every panel, the ETA included, is read while it runs, whatever the
machine's speed; then the gate opens and the job ends.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dj_operator.status import timeline
from tests.harness.cluster import Cluster
from tests.harness.ports import free_port
from tests.harness.processes import Component
from tests.harness.waiting import wait_for

from .conftest import REPO, promtool_check_metrics
from .dashboards import panels_without_data
from .scrape import scrape

RULES = REPO / "charts" / "datajuicer-operator" / "rules" / "alerts.yaml"

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.slow,
]


def _job(name: str, metrics_port: int | None = None, **recipe: Any) -> dict[str, Any]:
    from tests.k8s.operator_support import example_job, with_test_ops

    job = copy.deepcopy(example_job())
    job["metadata"]["name"] = name
    job["spec"]["recipe"].update(recipe)
    if metrics_port is not None:
        job["spec"]["runner"]["metricsPort"] = metrics_port
    # On Ray, as the dashboards are drawn for: a job of 100 samples would otherwise run on the
    # local engine, whose partitions can all finish between two scrapes (no rate to show).
    job = with_test_ops(job)
    runner = job["spec"]["runner"]
    runner["env"] = [*(runner.get("env") or []), {"name": "DJ_RUNNER_ENGINE", "value": "ray"}]
    return job


@pytest.fixture
def operator_with_metrics(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> Iterator[tuple[Component, int]]:
    from tests.k8s.operator_identity import operator_kubeconfig
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
        ],
        tmp_path / "operator.log",
        env={
            **os.environ,
            # The chart's operator ServiceAccount and Role, as every test's operator runs.
            "KUBECONFIG": str(operator_kubeconfig(k8s_cluster, namespace)),
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
    from tests.k8s.operator_support import DEMO_DATA, apply, job_obj, numbered_rows

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

    # The job the job dashboard shows, held at a gate with 9 of its 10 partitions done.
    gate = tmp_path / "gate"
    gate.mkdir()
    k8s_cluster.kubectl(
        "create",
        "configmap",
        "held-data",
        "-n",
        namespace,
        "--from-literal=demo.jsonl=" + numbered_rows(100, "HOLD", at=[99]),
    )
    demo = _job("demo", metrics_port=runner_port, partition_size=10)
    demo["spec"]["runner"]["volumes"][0]["configMap"]["name"] = "held-data"
    demo["spec"]["recipe"]["process"] = [
        {"whitespace_normalization_mapper": {}},
        {"gate_mapper": {"marker": "HOLD", "state_dir": str(gate)}},
        {"text_length_filter": {"min_len": 10}},
        {"text_length_filter": {"max_len": 10_000}},
    ]
    apply(k8s_cluster, namespace, demo)
    runner_url = f"http://127.0.0.1:{runner_port}/metrics"
    running = wait_for(
        lambda: scrape(runner_url), timeout=180, what="the runner pod's /metrics", ignore=(OSError,)
    )
    check = promtool_check_metrics(promtool, running.text)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    sel = f'namespace="{namespace}", job_name="demo"'
    prom.wait_for_query(f'datajuicer_job_partitions{{{sel}, state="done"}} == 9', timeout=240)
    # The ETA is counted down to the runner's estimate (it may already have reached 0).
    prom.wait_for_query(f"datajuicer_job_eta_seconds{{{sel}}} >= 0", timeout=60)
    values = {"namespace": namespace, "job": "demo", "__rate_interval": "10m"}
    missing: list[str] = []

    # Every job here runs in local mode: the phase-duration panels of kuberay-only intervals
    # have no data (test_prometheus_dashboards.py draws them with a kuberay job).
    kuberay_only = set(timeline.mode_intervals("kuberay")) - set(timeline.mode_intervals("local"))

    def panels_ok() -> bool:
        missing[:] = [
            m
            for m in panels_without_data(prom, values, fleet_namespaces=namespace)
            if not any(f'interval="{i}"' in m for i in kuberay_only)
        ]
        return not missing

    try:
        wait_for(panels_ok, timeout=120, what="every dashboard panel to return data")
    except AssertionError:
        status = job_obj(k8s_cluster, namespace, "demo").get("status") or {}
        raise AssertionError(
            "panels without data:\n" + "\n".join(missing) + f"\njob status: {status}"
        ) from None
    assert (job_obj(k8s_cluster, namespace, "demo").get("status") or {}).get("phase") == "Running"
    (gate / "open").touch()

    _wait_phase(k8s_cluster, namespace, "demo", {"Succeeded"}, 600)
    # The operator keeps the finished job's figures after its runner is gone.
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
    # The phase durations, from the milestones the operator recorded in each job's status: every
    # job made a runner pod; the two that succeeded reached each milestone, once each.
    demo_timeline = job_obj(k8s_cluster, namespace, "demo")["status"]["timeline"]
    assert set(demo_timeline) == {"podCreated", "rayReady", "firstCheckpoint"}

    def observed(interval: str) -> float | None:
        return final.value(
            "datajuicer_job_phase_interval_seconds_count",
            namespace=namespace,
            mode="local",
            interval=interval,
        )

    assert observed("apply_to_pod_created") == 3
    assert observed("pod_created_to_ray_ready") in (2, 3)  # broken's Ray may start before it fails
    assert observed("ray_ready_to_first_checkpoint") == 2
    assert observed("first_checkpoint_to_finished") == 2
