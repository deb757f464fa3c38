"""`helm install` for real: the operator runs from the built image, on a node in container mode
(tests/harness/containers.py), under its own ServiceAccount token, so only the chart's RBAC
applies. It reconciles examples/job.yaml to Succeeded with the runner pod also running from the
image with a read-only root filesystem; `helm upgrade` during a job does not restart the job;
`helm uninstall` removes the operator and leaves the CRD and the jobs.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.binaries import REPO_ROOT
from tests.harness.cluster import Cluster
from tests.harness.containers import project_image
from tests.harness.ports import free_port
from tests.harness.waiting import wait_for
from tests.k8s.chartutil import CHART

JOB_EXAMPLE = REPO_ROOT / "examples" / "job.yaml"
DEMO_DATA = REPO_ROOT / "examples" / "data" / "demo.jsonl"
RELEASE = "dj"
OPERATOR = f"{RELEASE}-datajuicer-operator"
RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.slow,
    pytest.mark.timeout(3600),
]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    """A cluster whose node runs every pod from its image with podman, and the project image."""
    image = project_image()
    cluster = Cluster(tmp_path_factory.mktemp("shipped"), container_mode=True).start()
    try:
        yield cluster, image
    finally:
        cluster.stop()


def _json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _job_manifest(image: str) -> dict[str, Any]:
    """examples/job.yaml, with every container on the project image (the node never pulls) and
    the chart's restricted security settings and /tmp mount on the runner."""
    job = copy.deepcopy(yaml.safe_load(JOB_EXAMPLE.read_text()))
    runner = job["spec"].setdefault("runner", {})
    runner["image"] = image
    runner["imagePullPolicy"] = "Never"
    runner["podSecurityContext"] = RESTRICTED_POD
    runner["securityContext"] = RESTRICTED_CONTAINER
    runner.setdefault("volumes", []).append({"name": "tmp", "emptyDir": {}})
    runner.setdefault("volumeMounts", []).append({"name": "tmp", "mountPath": "/tmp"})
    for init in runner.get("initContainers") or []:
        init["image"] = image
        init["imagePullPolicy"] = "Never"
        init["securityContext"] = RESTRICTED_CONTAINER
    return job


def _phase(cluster: Cluster, namespace: str, name: str) -> str:
    job = _json(cluster, "get", "datajuicerjob", name, "-n", namespace)
    return str((job.get("status") or {}).get("phase") or "")


def _runner_pods(cluster: Cluster, namespace: str, job: str) -> list[dict[str, Any]]:
    pods = _json(cluster, "get", "pods", "-n", namespace)["items"]
    return [p for p in pods if p["metadata"]["name"].startswith(f"{job}-runner")]


def _operator_pod(cluster: Cluster, namespace: str) -> dict[str, Any]:
    pods = _json(
        cluster, "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in pods]
    return live[0]


def _local_output(tmp_path: Path) -> bytes:
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "dj-runner"),
            "run",
            "examples/recipe.yaml",
            "--work-dir",
            "out/work",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return (tmp_path / "out" / "demo" / "result.jsonl").read_bytes()


def test_install_run_upgrade_uninstall(shipped: tuple[Cluster, str], tmp_path: Path) -> None:
    cluster, image = shipped
    repository, tag = image.rsplit(":", 1)
    system = cluster.create_namespace("dj-system")
    jobs = cluster.create_namespace("jobs")

    # The node's pods share the host's network: the runners' metrics port and the operator's
    # metrics and liveness ports must be free ones (never the chart's fixed defaults).
    metrics_port = free_port()
    installed = cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", system,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never", "--set", f"runner.metricsPort={metrics_port}",
        "--set", f"operator.metricsPort={free_port()}",
        "--set", f"operator.livenessPort={free_port()}",
    )  # fmt: skip
    assert "kubectl apply -f examples/job.yaml" in installed.stdout
    cluster.kubectl(
        "rollout", "status", f"deployment/{OPERATOR}", "-n", system, "--timeout=300s",
        timeout=330,
    )  # fmt: skip
    operator = _operator_pod(cluster, system)
    assert operator["spec"]["serviceAccountName"] == OPERATOR
    assert operator["spec"]["containers"][0]["image"] == image

    # The job, with nothing but the chart's permissions on the operator's side.
    cluster.kubectl("create", "configmap", "demo-data", "-n", jobs, f"--from-file={DEMO_DATA}")
    job = _job_manifest(image)
    cluster.kubectl("apply", "-n", jobs, "-f", "-", input=json.dumps(job))
    name = job["metadata"]["name"]
    wait_for(lambda: _runner_pods(cluster, jobs, name), 300, f"a runner pod of {name}")

    # helm upgrade (changed values) while the job runs: the operator is replaced, the job is not.
    cluster.helm(
        "upgrade", RELEASE, str(CHART), "--namespace", system, "--reuse-values",
        "--set", "operator.podAnnotations.upgraded=yes",
    )  # fmt: skip
    wait_for(
        lambda: _operator_pod(cluster, system)["metadata"]["uid"] != operator["metadata"]["uid"],
        300,
        "the upgraded operator pod",
        ignore=(AssertionError,),
    )
    wait_for(
        lambda: _phase(cluster, jobs, name) in ("Succeeded", "Failed", "PartiallySucceeded"),
        600,
        f"job {name} to finish",
    )
    assert _phase(cluster, jobs, name) == "Succeeded", cluster.kubectl(
        "describe", "datajuicerjob", name, "-n", jobs
    ).stdout
    runners = _runner_pods(cluster, jobs, name)
    attempts = _json(cluster, "get", "datajuicerjob", name, "-n", jobs)["status"].get("attempts")
    assert len(runners) == 1, f"the job ran more than once: {attempts}"
    runner = runners[0]
    container = runner["spec"]["containers"][0]
    assert container["image"] == image
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["ports"] == [
        {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}
    ]
    assert runner["status"]["phase"] == "Succeeded"

    claims = _json(cluster, "get", "pvc", "-n", jobs)["items"]
    outputs = [
        cluster.node.pvc_dir(jobs, c["metadata"]["name"]) / "output" / "result.jsonl"
        for c in claims
    ]
    produced = [p for p in outputs if p.exists()]
    assert len(produced) == 1, outputs
    assert produced[0].read_bytes() == _local_output(tmp_path)

    # helm uninstall: the operator goes, the CRD and the job stay.
    cluster.helm("uninstall", RELEASE, "--namespace", system, "--wait", "--timeout=300s")
    assert not _json(cluster, "get", "deployments", "-n", system)["items"]
    cluster.kubectl("get", "crd", "datajuicerjobs.datajuicer.io")
    assert _phase(cluster, jobs, name) == "Succeeded"
