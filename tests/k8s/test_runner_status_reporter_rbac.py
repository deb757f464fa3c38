"""The runner's status reporter in a pod under the runner's own ServiceAccount: it writes its
job's status.progress, and RBAC lets it touch nothing else."""

from __future__ import annotations

import json

import pytest

from dj_operator.build import children
from dj_runner import contract
from tests.harness.cluster import Cluster
from tests.k8s.operator_support import apply, crd, example_job, job_obj
from tests.k8s.podutil import python_pod

pytestmark = pytest.mark.k8s
__all__ = ["crd"]

STATUS = {
    "schema_version": 1,
    "job_id": "demo",
    "run_id": "run-1",
    "state": "running",
    "started_at": "2026-11-30T05:12:00.123Z",
    "updated_at": "2026-11-30T05:12:09.456Z",
    "finished_at": None,
    "runner_version": "0.1.0",
    "partitions": {"total": 10, "done": 3, "failed": 0, "running": 2},
    "samples": {"in": 1234, "out": 1100, "rejected": 2},
    "stage": {"index": 2, "op": "text_length_filter", "global": False},
    "last_checkpoint_at": "2026-11-30T05:12:09.001Z",
    "resumed": {"partitions_done": 3, "checkpoints": 12},
    "export_path": "/data/out/result.jsonl",
    "error": None,
}

# In the pod: write status.json, report it, then try what the Role must refuse.
CODE = """
import json, os, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from dj_runner.observe.k8s_status import ProgressReporter
work = os.path.join(os.environ["KPN_POD_DIR"], "work")
os.makedirs(work, exist_ok=True)
open(os.path.join(work, "status.json"), "w").write(os.environ["STATUS"])
reporter = ProgressReporter(work, os.environ["DJ_JOB_NAMESPACE"], os.environ["DJ_JOB_NAME"])
assert reporter.report_once(force=True), "no patch"
config.load_kube_config()
api = client.CustomObjectsApi()
ns = os.environ["DJ_JOB_NAMESPACE"]
denied = []
for what, call in [
    ("other job status", lambda: api.patch_namespaced_custom_object_status(
        "datajuicer.io", "v1alpha1", ns, "datajuicerjobs", "other", {"status": {"phase": "x"}})),
    ("own spec", lambda: api.patch_namespaced_custom_object(
        "datajuicer.io", "v1alpha1", ns, "datajuicerjobs", "demo", {"spec": {"suspend": True}})),
    ("pods", lambda: client.CoreV1Api().list_namespaced_pod(ns)),
]:
    try:
        call()
    except ApiException as exc:
        denied.append((what, exc.status))
print(json.dumps(denied))
sys.exit(0 if [s for _, s in denied] == [403, 403, 403] else 1)
"""


def test_reporter_writes_only_its_own_jobs_progress(
    k8s_cluster: Cluster, namespace: str, crd: None
) -> None:
    demo = example_job()
    other = example_job()
    other["metadata"]["name"] = "other"
    apply(k8s_cluster, namespace, demo, other)
    job = job_obj(k8s_cluster, namespace, "demo")
    apply(k8s_cluster, namespace, *children.runner_rbac(job))
    pod = python_pod(
        "reporter",
        CODE,
        serviceAccountName="demo-runner",
        env=[
            {"name": contract.ENV_JOB_NAME, "value": "demo"},
            {"name": contract.ENV_JOB_NAMESPACE, "value": namespace},
            {"name": "STATUS", "value": json.dumps(STATUS)},
        ],
    )
    apply(k8s_cluster, namespace, pod)
    k8s_cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "pod/reporter",
        "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=90s",
        timeout=100,
    )
    logs = k8s_cluster.kubectl("logs", "-n", namespace, "reporter").stdout
    assert json.loads(logs.strip().splitlines()[-1]) == [
        ["other job status", 403],
        ["own spec", 403],
        ["pods", 403],
    ]
    progress = job_obj(k8s_cluster, namespace, "demo")["status"]["progress"]
    assert progress["completion"] == "3/10"
    assert progress["samplesOut"] == 1100
    assert progress["podName"] == "reporter"
    assert progress["resumedCheckpoints"] == 12
    assert "progress" not in (job_obj(k8s_cluster, namespace, "other").get("status") or {})
    row = k8s_cluster.kubectl("get", "djjob", "demo", "-n", namespace).stdout.splitlines()[1]
    # NAME PHASE PROGRESS SAMPLES-OUT RESTARTS AGE: no operator runs here, so PHASE and
    # RESTARTS are blank.
    assert row.split()[:3] == ["demo", "3/10", "1100"]
