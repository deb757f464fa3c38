"""Jobs on object storage end to end: a DataJuicerJob with `spec.storage.objectStore` and no claim
at all, on the real control plane with the operator as a process, against a real S3 server
(SeaweedFS's `weed mini`, tests/harness/s3server.py) whose credentials reach the pods only from a
Secret the installation policy allows. The input, the work dir and the output are in the bucket;
the output is byte-identical to a local `dj-runner run` of the same recipe on local files:

- a local-mode job (the runner's embedded Ray);
- a kuberay-mode job with 2 workers on the real KubeRay operator (no volume on any Ray pod);
- the same kuberay job with a worker pod deleted and the runner SIGKILLed mid-job.
"""

from __future__ import annotations

import copy
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from pyarrow.fs import FileSelector, FileType

from dj_runner import contract
from tests.harness.cluster import Cluster
from tests.harness.ports import free_port, free_ray_ports
from tests.harness.s3server import ADMIN, S3Server, start_s3_server
from tests.harness.waiting import wait_for
from tests.k8s import raycluster
from tests.k8s.operator_support import (
    DEMO_DATA,
    ROOT,
    OperatorProcess,
    apply,
    ensure_crd,
    events,
    get_json,
    job_obj,
    local_reference,
    runner_pods,
    short_tmp,
    wait_condition,
    with_test_ops,
)

pytestmark = pytest.mark.k8s
Obj = dict[str, object]

EXAMPLE = ROOT / "examples" / "job-object-store.yaml"
SECRET = "s3-credentials"
INPUT_KEY = "input/demo.jsonl"
OUTPUT_KEY = "output/result.jsonl"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3-server"))
    yield server
    server.stop()
    assert not server.alive(), "weed mini is still running after stop"


@pytest.fixture
def bucket(s3: S3Server, namespace: str) -> str:
    """A bucket of the test's own holding the demo input (named after the fresh namespace)."""
    name = s3.create_bucket(f"dj-{namespace}"[:63])
    s3.put_object(name, INPUT_KEY, DEMO_DATA.read_bytes())
    return name


@pytest.fixture
def store_operator(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, under a policy that allows the credentials Secret and nothing more."""
    ensure_crd(k8s_cluster)
    env = {"DJ_POLICY_ALLOWED_SECRETS": SECRET}
    op = OperatorProcess(k8s_cluster, namespace, tmp_path / "operator.log", env).start()
    yield op
    if op.proc is not None and op.proc.poll() is None:
        assert op.stop() == 0, op.tail()


def credentials_secret(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        SECRET,
        "-n",
        namespace,
        f"--from-literal={contract.ENV_AWS_ACCESS_KEY_ID}={ADMIN.access_key}",
        f"--from-literal={contract.ENV_AWS_SECRET_ACCESS_KEY}={ADMIN.secret_key}",
    )


def store_job(name: str, s3: S3Server, bucket: str, mode: str, workers: int = 2) -> Obj:
    """examples/job-object-store.yaml pointed at the test's server and bucket, on Ray ports of
    its own in kuberay mode (a head with no CPUs for tasks, `workers` workers of 1 CPU)."""
    job = short_tmp(yaml.safe_load(EXAMPLE.read_text()))
    job["metadata"]["name"] = name
    spec = job["spec"]
    spec["recipe"]["dataset_path"] = f"s3://{bucket}/{INPUT_KEY}"
    spec["recipe"]["export_path"] = f"s3://{bucket}/{OUTPUT_KEY}"
    store = spec["storage"]["objectStore"]
    store.update(workDir=f"s3://{bucket}/work/{name}", endpoint=s3.endpoint, region=s3.region)
    assert store["credentialsSecret"] == {"name": SECRET}
    if mode == "local":
        spec["ray"] = {"mode": "local"}
        return job
    ports = free_ray_ports()
    ray_store = {"object-store-memory": raycluster.OBJECT_STORE_BYTES}
    small = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    spec["ray"] = {
        "mode": "kuberay",
        "readyTimeoutSeconds": 600,
        "headGroup": {
            "rayStartParams": {"num-cpus": "0", **ray_store},
            "resources": small,
            "ports": {"gcs": ports.gcs, "client": ports.client, "dashboard": free_port()},
        },
        "workerGroups": [
            {
                "name": "workers",
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": workers,
                "rayStartParams": {"num-cpus": "1", **ray_store},
                "resources": small,
            }
        ],
    }
    return job


def ray_pod_names(core: client.CoreV1Api, namespace: str, job: str, node_type: str) -> list[str]:
    """The names of the job's Ray pods of `node_type` (head or worker) now."""
    return [
        p.metadata.name
        for p in raycluster.ray_pods(core, namespace, f"{job}-ray")
        if p.metadata.labels["ray.io/node-type"] == node_type
    ]


def reference(tmp: Path, job: Obj) -> bytes:
    """The output of a local `dj-runner run` of the job's recipe on local files."""
    recipe = copy.deepcopy(job["spec"]["recipe"])  # type: ignore[index]
    recipe.update(dataset_path=INPUT_KEY, export_path=OUTPUT_KEY)
    return local_reference(tmp, recipe, {INPUT_KEY: DEMO_DATA.read_text()})


def assert_no_claim_and_no_leak(cluster: Cluster, namespace: str, name: str, bucket: str) -> None:
    """No claim exists; the job's status shows the bucket, and no secret value reaches the
    status, the Events, `kubectl describe`, the recipe ConfigMap or the runner's log."""
    claims = get_json(cluster, namespace, "persistentvolumeclaims")["items"]
    assert claims == [], [c["metadata"]["name"] for c in claims]  # type: ignore[index]
    status = job_obj(cluster, namespace, name)["status"]
    assert status["workDir"] == f"s3://{bucket}/work/{name}"
    assert status["outputPath"] == f"s3://{bucket}/{OUTPUT_KEY}"
    assert "claim" not in status["children"]
    described = cluster.kubectl("describe", "djjob", name, "-n", namespace).stdout
    assert f"s3://{bucket}/work/{name}" in described
    config_map = get_json(cluster, namespace, "configmap", f"{name}-recipe")
    pods = runner_pods(cluster, namespace, name)
    logs = [
        cluster.kubectl("logs", "-n", namespace, p["metadata"]["name"], check=False).stdout
        for p in pods
    ]
    texts = {
        "status": json.dumps(status),
        "events": json.dumps(events(cluster, namespace, name)),
        "describe": described,
        "configmap": json.dumps(config_map),
        "runner logs": "\n".join(logs),
    }
    for where, text in texts.items():
        assert ADMIN.secret_key not in text, where
        assert ADMIN.access_key not in text, where


def assert_pod_reaches_the_store_by_reference(pod_spec: Obj, what: str) -> None:
    volumes = pod_spec.get("volumes") or []
    assert not [v for v in volumes if "persistentVolumeClaim" in v], what  # type: ignore[operator]
    (container,) = [
        c
        for c in pod_spec["containers"]  # type: ignore[union-attr]
        if c["name"] in ("runner", "ray-head", "ray-worker")
    ]
    env = {var["name"]: var for var in container["env"]}
    ref = env[contract.ENV_AWS_SECRET_ACCESS_KEY]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": SECRET, "key": contract.ENV_AWS_SECRET_ACCESS_KEY}, what
    assert "value" not in env[contract.ENV_AWS_SECRET_ACCESS_KEY], what


def test_a_local_mode_job_with_everything_in_the_bucket_and_no_claim(
    k8s_cluster: Cluster,
    namespace: str,
    store_operator: OperatorProcess,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    name = "s3-local"
    job = store_job(name, s3, bucket, "local")
    credentials_secret(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, job)
    done = wait_condition(k8s_cluster, namespace, name, "Succeeded", timeout=400)
    assert done["status"]["restarts"] == 0
    assert s3.get_object(bucket, OUTPUT_KEY) == reference(tmp_path / "reference", job)
    (pod,) = runner_pods(k8s_cluster, namespace, name)
    assert_pod_reaches_the_store_by_reference(pod["spec"], "runner pod")
    assert_no_claim_and_no_leak(k8s_cluster, namespace, name, bucket)


def test_a_kuberay_job_with_two_workers_and_no_claim(
    k8s_cluster: Cluster,
    namespace: str,
    store_operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    # The Ray pods KubeRay makes from the operator's templates must be admitted under `restricted`.
    k8s_cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    name = "s3-kr"
    job = store_job(name, s3, bucket, "kuberay", workers=2)
    credentials_secret(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, job)

    # Read while the job runs: the cluster goes once it finishes.
    pods = raycluster.wait_running(core, namespace, f"{name}-ray", 3)  # the head, 2 workers
    for pod in pods:
        spec = api.sanitize_for_serialization(pod.spec)
        assert_pod_reaches_the_store_by_reference(spec, pod.metadata.name)
    done = wait_condition(k8s_cluster, namespace, name, "Succeeded", timeout=500)
    assert done["status"]["restarts"] == 0
    assert s3.get_object(bucket, OUTPUT_KEY) == reference(tmp_path / "reference", job)
    assert_no_claim_and_no_leak(k8s_cluster, namespace, name, bucket)


def test_a_worker_and_the_runner_killed_mid_job_still_identical(
    k8s_cluster: Cluster,
    namespace: str,
    store_operator: OperatorProcess,
    core: client.CoreV1Api,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    name = "s3-kill"
    # Each partition (50 rows) holds its worker for 6 s in its first op, so both kills land
    # mid-job, after the first checkpoints and well before the last.
    job = with_test_ops(store_job(name, s3, bucket, "kuberay", workers=2))
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 6.0}})  # type: ignore[index]
    credentials_secret(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, job)

    def mid_job() -> bool:
        """A partition committed a checkpoint in the bucket, and the job has no result yet."""
        fs = s3.filesystem()
        work = f"{bucket}/work/{name}"
        checkpoints = f"{work}/{contract.CHECKPOINTS_DIR}"
        selector = FileSelector(checkpoints, recursive=True, allow_not_found=True)
        committed = any(i.type == FileType.File for i in fs.get_file_info(selector))
        result = fs.get_file_info(f"{work}/{contract.RESULT_FILE}")
        return committed and result.type == FileType.NotFound

    wait_for(mid_job, 300, "a checkpoint committed in the bucket mid-job", interval=0.2)
    workers = ray_pod_names(core, namespace, name, "worker")
    # At once, as a crashed node goes; then the runner, as an OOM kill would.
    core.delete_namespaced_pod(workers[0], namespace, grace_period_seconds=0)
    k8s_cluster.node.kill_pod_process(namespace, f"{name}-runner-1", signal.SIGKILL)
    done = wait_condition(k8s_cluster, namespace, name, "Succeeded", timeout=600)
    status = done["status"]
    print(f"restarts: {status['restarts']}; attempts: {status['attempts']}")
    assert status["attempts"][0]["exitCode"] == 137, status["attempts"]
    assert status["attempts"][-1]["exitCode"] == 0
    assert status["restarts"] >= 1
    assert s3.get_object(bucket, OUTPUT_KEY) == reference(tmp_path / "reference", job)
    assert_no_claim_and_no_leak(k8s_cluster, namespace, name, bucket)


def test_the_head_lost_the_operator_killed_and_a_suspend_on_a_bucket_still_identical(
    k8s_cluster: Cluster,
    namespace: str,
    store_operator: OperatorProcess,
    core: client.CoreV1Api,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    """What the claim's lifecycle tests prove, on a bucket: the Ray head deleted at once (the
    runner loses Ray and exits 7, or its Ray client reconnects to the new head), the operator
    SIGKILLed and started again, then a suspend and a resume; Succeeded, byte-identical."""
    name = "s3-head"
    job = with_test_ops(store_job(name, s3, bucket, "kuberay", workers=1))
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 4.0}})  # type: ignore[index]
    credentials_secret(k8s_cluster, namespace)
    apply(k8s_cluster, namespace, job)
    commits = f"{bucket}/work/{name}/{contract.CHECKPOINTS_DIR}"

    def committed() -> int:
        selector = FileSelector(commits, recursive=True, allow_not_found=True)
        infos = s3.filesystem().get_file_info(selector)
        return sum(1 for i in infos if i.type == FileType.File and "/commits.jsonl/" in i.path)

    wait_for(lambda: committed() >= 1, 300, "a checkpoint committed in the bucket", interval=0.2)
    (head,) = ray_pod_names(core, namespace, name, "head")
    core.delete_namespaced_pod(head, namespace, grace_period_seconds=0)
    wait_for(
        lambda: [h for h in ray_pod_names(core, namespace, name, "head") if h != head],
        300,
        "KubeRay's new head pod in place of the deleted one",
    )
    assert store_operator.proc is not None
    store_operator.proc.kill()  # SIGKILL, mid-job
    store_operator.proc.wait(timeout=30)
    store_operator.start()
    before = committed()
    wait_for(lambda: committed() > before, 400, "a commit after the head and operator losses")
    k8s_cluster.kubectl(
        "patch", "djjob", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    phase = wait_for(
        lambda: (
            (job_obj(k8s_cluster, namespace, name).get("status") or {}).get("phase")
            in ("Suspended", "Succeeded")
            and job_obj(k8s_cluster, namespace, name)["status"]["phase"]
        ),
        240,
        "the job Suspended (or already Succeeded)",
    )
    if phase == "Suspended":
        k8s_cluster.kubectl(
            "patch",
            "djjob",
            name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"suspend":false}}',
        )
    done = wait_condition(k8s_cluster, namespace, name, "Finished", timeout=600)
    status = done["status"]
    print(f"restarts: {status['restarts']}; attempts: {status['attempts']}")
    assert status["phase"] == "Succeeded", status
    assert s3.get_object(bucket, OUTPUT_KEY) == reference(tmp_path / "reference", job)
    assert_no_claim_and_no_leak(k8s_cluster, namespace, name, bucket)
