"""A real Prometheus scrapes the runner's and the operator's endpoints; every dashboard panel's
PromQL, with its variables substituted, returns data through the HTTP API, every variable's
query resolves, and the alert rules load and fire on the data.

The runner side is a real job on an embedded Ray. The operator side is the operator's metrics
server over a ``JobIndex`` filled with realistic DataJuicerJob bodies that move through their
phases while Prometheus watches (the end-to-end run against a real ``dj-operator`` on the test
control plane is ``test_operator_e2e.py``).
"""

from __future__ import annotations

import time

import pytest

from dj_operator.events_catalog import EventCorrelator, EventRecorder
from dj_operator.metrics import OperatorMetrics, start_metrics_server
from dj_runner.observe.metrics import serve_metrics

from .dashboards import (
    dashboard_files,
    parse_label_values,
    substitute,
    variable_queries,
    wait_every_panel_has_data,
)
from .djjobs import djjob
from .jobs import run_job, small_job
from .test_alert_rules import RULES

pytestmark = pytest.mark.usefixtures("ray_session")

NAMESPACE, JOB = "team-a", "metrics-demo"
VALUES = {
    "namespace": NAMESPACE,
    "job": JOB,
    "__rate_interval": "2m",
    "datasource": "prometheus",
}


class MemorySink:
    """Where the recorder's Events go in this test (the API-server calls are the operator's)."""

    def __init__(self) -> None:
        self.created: list[dict] = []

    def create(self, body: dict) -> int:
        self.created.append(body)
        return 1

    def bump(self, namespace: str, name: str, count: int, last_timestamp: str) -> None:
        pass


def _drive_operator(metrics: OperatorMetrics, now: float) -> None:
    """Transitions, handler calls, API requests and Events, as the operator would report."""
    index = metrics.index
    recorder = EventRecorder(
        MemorySink(),
        EventCorrelator(burst=2),
        on_suppressed=metrics.event_suppressed,
        on_posted=metrics.event_posted,
    )
    for name, ns in ((JOB, NAMESPACE), ("nightly", NAMESPACE), ("broken", "team-b")):
        mode = "kuberay" if name == "nightly" else "local"
        with metrics.reconcile("on_create"):
            index.upsert(djjob(name, namespace=ns, phase="Starting", created=now - 30, mode=mode))
            metrics.api_request("create", 201)
            recorder.record(djjob(name, namespace=ns), "Created", "children created")
        metrics.watch_event("DataJuicerJob")
    index.upsert(
        djjob(
            JOB,
            created=now - 30,
            started=now - 20,
            run_started=now - 20,
            updated=now - 1,
            last_checkpoint=now - 2,
            partitions=(6, 4, 0, 2),
            samples=(160, 150, 0),
            # local mode: pod created, its Ray started, a first checkpoint
            timeline={"podCreated": now - 28, "rayReady": now - 24, "firstCheckpoint": now - 2},
        )
    )
    # kuberay mode: the cluster ready, then the runner pod, a first checkpoint, the end.
    nightly = {"created": now - 30, "started": now - 25, "mode": "kuberay"}
    index.upsert(djjob("nightly", **nightly, timeline={"rayReady": now - 26}))
    kuberay_timeline = {"rayReady": now - 26, "podCreated": now - 25, "firstCheckpoint": now - 9}
    index.upsert(
        djjob("nightly", phase="Succeeded", **nightly, completed=now, timeline=kuberay_timeline)
    )
    index.upsert(djjob("broken", namespace="team-b", created=now - 30, started=now - 28))
    index.upsert(
        djjob(
            "broken",
            namespace="team-b",
            phase="Failed",
            created=now - 30,
            started=now - 28,
            completed=now - 3,
            failure_reason="InvalidInput",
        )
    )
    with pytest.raises(RuntimeError), metrics.reconcile("on_update"):
        metrics.api_request("patch", 409)
        raise RuntimeError("conflict")
    for _ in range(3):  # the third is over the burst of 2: suppressed
        recorder.record(djjob("broken", namespace="team-b"), "InvalidInput", "no such file")
    metrics.watch_event("DataJuicerJob")


def test_every_panel_returns_data_from_a_real_prometheus(tmp_path, prometheus):
    metrics = OperatorMetrics(handlers=("on_create", "on_update"))
    operator = start_metrics_server(0, metrics, host="127.0.0.1")
    job = small_job(tmp_path, slow_seconds=1.0)
    runner = serve_metrics(job.work_dir, 0, host="127.0.0.1", namespace=NAMESPACE, job_name=JOB)
    try:
        for name, ns, mode in (
            (JOB, NAMESPACE, "local"),
            ("nightly", NAMESPACE, "kuberay"),
            ("broken", "team-b", "local"),
        ):
            metrics.index.upsert(djjob(name, namespace=ns, phase=None, mode=mode))
        prom = prometheus(
            {
                "datajuicer-runner": [f"127.0.0.1:{runner.port}"],
                "datajuicer-operator": [f"127.0.0.1:{operator.port}"],
            },
            rule_files=[RULES],
        )
        prom.wait_up(2)
        # Both endpoints' first state is stored before anything moves, so rates see the moves.
        prom.wait_for_query('datajuicer_job_phase{phase="Pending"} == 1')
        prom.wait_for_query(f'datajuicer_runner_phase{{job_name="{JOB}", phase="starting"}} == 1')

        _drive_operator(metrics, time.time())
        result = run_job(job, job_id=JOB)
        assert result.exit_code == 0, result.error

        prom.wait_for_query(f'datajuicer_runner_phase{{job_name="{JOB}", phase="succeeded"}} == 1')
        prom.wait_for_query('datajuicer_job_phase{job_name="broken", phase="Failed"} == 1')
        wait_every_panel_has_data(prom, VALUES, fleet_namespaces=f"{NAMESPACE}|team-b")

        # Figures that must agree with the job itself, through PromQL.
        sel = f'namespace="{NAMESPACE}", job_name="{JOB}"'
        out = prom.finite_values(
            f'sum(datajuicer_runner_op_output_samples_total{{{sel}, op="document_deduplicator"}})'
        )
        assert out == [result.rows_out]
        assert prom.finite_values(f"datajuicer_runner_partitions_completed_total{{{sel}}}") == [6]
        assert prom.finite_values(f"datajuicer_runner_partitions_retried_total{{{sel}}}") == [1]
        assert prom.finite_values(f"sum(datajuicer_runner_input_bytes_total{{{sel}}})") == [
            job.dataset.stat().st_size
        ]
        drop = prom.finite_values(
            f'rate(datajuicer_runner_op_dropped_samples_total{{{sel}, op="text_length_filter"}}[2m])'
        )
        assert drop and drop[0] > 0

        # The phase durations: one observation per interval each job completed, by mode.
        observed = {
            (r["metric"]["mode"], r["metric"]["interval"]): float(r["value"][1])
            for r in prom.query(
                f'datajuicer_job_phase_interval_seconds_count{{namespace="{NAMESPACE}"}} > 0'
            )
        }
        assert observed == {
            ("local", "apply_to_pod_created"): 1,
            ("local", "pod_created_to_ray_ready"): 1,
            ("local", "ray_ready_to_first_checkpoint"): 1,
            ("kuberay", "apply_to_ray_ready"): 1,
            ("kuberay", "ray_ready_to_pod_created"): 1,
            ("kuberay", "pod_created_to_first_checkpoint"): 1,
            ("kuberay", "first_checkpoint_to_finished"): 1,
        }

        # Every variable's query resolves to the values the jobs have.
        for path in dashboard_files():
            for v in variable_queries(path):
                match, label = parse_label_values(substitute(v.query, {"namespace": NAMESPACE}))
                found = prom.label_values(label, match)
                expected = {"namespace": NAMESPACE, "job_name": JOB}[label]
                assert expected in found, f"{path.name}: {v.query} -> {found}"

        # The alert rules loaded into the real server fire on the failed job.
        firing = prom.wait_for_query('ALERTS{alertname="DataJuicerJobFailed", alertstate="firing"}')
        assert firing[0]["metric"]["job_name"] == "broken"
        assert firing[0]["metric"]["reason"] == "InvalidInput"
        assert not prom.query('ALERTS{alertname="DataJuicerJobStalled"}')
    finally:
        runner.close()
        operator.close()
