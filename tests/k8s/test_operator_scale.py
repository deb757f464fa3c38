"""The operator's cost at steady state, on the real control plane: jobs that are Running with
pods that do not change, Suspended or finished cost no API request and no reconcile (no pass
over every job); a deadline still fires from its per-job timer, with no event to wake it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.operator_support import (
    OperatorProcess,
    apply,
    ensure_crd,
    minimal_job,
    prometheus_sum,
)

REQUESTS = "datajuicer_operator_api_requests_total"
RECONCILES = "datajuicer_operator_reconciles_total"


def phases(cluster: Cluster, namespace: str) -> dict[str, str]:
    items = json.loads(cluster.kubectl("get", "djjob", "-n", namespace, "-o", "json").stdout)
    return {j["metadata"]["name"]: (j.get("status") or {}).get("phase") for j in items["items"]}


def test_settled_and_running_jobs_cost_no_request_and_a_deadline_still_fires(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    ensure_crd(k8s_cluster)
    op = OperatorProcess(k8s_cluster, namespace, tmp_path / "operator.log", metrics=True).start()
    try:
        running = [minimal_job(f"run-{i}") for i in range(4)]
        suspended = [minimal_job(f"held-{i}") for i in range(3)]
        for job in suspended:
            job["spec"]["suspend"] = True
        done = [minimal_job(f"done-{i}", ["sh", "-c", "exit 0", "runner"]) for i in range(3)]
        apply(k8s_cluster, namespace, *running, *suspended, *done)
        want = {
            **{j["metadata"]["name"]: "Running" for j in running},
            **{j["metadata"]["name"]: "Suspended" for j in suspended},
            **{j["metadata"]["name"]: "Succeeded" for j in done},
        }
        wait_for(lambda: phases(k8s_cluster, namespace) == want, 240, f"phases {want}")

        # Settled: the last reconciles (status writes, their echoes) are behind us once the
        # counters stop moving for a while.
        def quiet() -> bool:
            before = prometheus_sum(op.metrics(), RECONCILES)
            time.sleep(3)  # a measurement interval, not a synchronisation
            return prometheus_sum(op.metrics(), RECONCILES) == before

        wait_for(quiet, 120, "the operator's reconciles to stop")
        text = op.metrics()
        requests0, reconciles0 = prometheus_sum(text, REQUESTS), prometheus_sum(text, RECONCILES)
        # Ten jobs over 15 s: the resync loop this replaced made a GET and a LIST per
        # unfinished job every few seconds; now nothing happens until something changes.
        time.sleep(15)  # the window the steady state is observed over, not a synchronisation
        text = op.metrics()
        assert prometheus_sum(text, REQUESTS) == requests0, op.tail()
        assert prometheus_sum(text, RECONCILES) == reconciles0

        # A deadline has no event to wake the job: its timer does.
        job = minimal_job("late")
        job["spec"]["activeDeadlineSeconds"] = 5
        apply(k8s_cluster, namespace, job)
        wait_for(
            lambda: phases(k8s_cluster, namespace).get("late") == "Failed",
            60,
            "the deadline of job late",
        )
        late = json.loads(
            k8s_cluster.kubectl("get", "djjob", "late", "-n", namespace, "-o", "json").stdout
        )
        assert late["status"]["failure"]["reason"] == "DeadlineExceeded"
    finally:
        assert op.stop() == 0, op.tail()
