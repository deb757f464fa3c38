"""A node lost mid-job: on a cluster of two process nodes, the node running the runner (and, in
kuberay mode, the Ray head and worker) dies: its processes killed, nothing more reported.
Kubernetes notices, taints the node and evicts the pods after `nodeLostTolerationSeconds`; no
kubelet is left to end them, so the operator removes them, KubeRay replaces the Ray pods, and
the next attempt resumes on the other node, to the output of a local run. And a node cut off
rather than dead: its runner is frozen while the next attempt takes over, then runs on, and must
commit nothing (the claims fence it) nor move the job's status."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes import client

from dj_operator.build.names import ray_cluster as ray_cluster_name
from dj_runner import contract
from dj_runner.contract import ExitCode
from dj_runner.store.atomic import read_records
from dj_runner.store.fencing import fenced, read_claim
from dj_runner.store.workdir import WorkDir
from tests.harness.cluster import Cluster
from tests.harness.informer import run_informer
from tests.harness.waiting import WaitTimeout, wait_for
from tests.k8s.operator_support import (
    DEMO_DATA,
    OperatorProcess,
    apply,
    demo_data,
    events,
    example_job,
    job_obj,
    local_reference,
    own_cluster,
    runner_pods,
    wait_condition,
    wait_phase,
    with_test_ops,
)

pytestmark = pytest.mark.k8s


@pytest.fixture
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh cluster for each test: each loses its second node for good."""
    with own_cluster(tmp_path_factory.mktemp("node-loss"), nodes=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    recipe = example_job()["spec"]["recipe"]
    return local_reference(
        tmp_path_factory.mktemp("reference"), recipe, {"input/demo.jsonl": DEMO_DATA.read_text()}
    )


def runner_on(cluster: Cluster, namespace: str, pod: str, job: str = "demo") -> str | None:
    """The node a runner pod runs on, once it is Running there."""
    pods = {p["metadata"]["name"]: p for p in runner_pods(cluster, namespace, job)}
    current = pods.get(pod)
    if not current or current["status"].get("phase") != "Running":
        return None
    return str(current["spec"]["nodeName"])


def on_the_second_node(cluster: Cluster, namespace: str, job: dict[str, Any]) -> None:
    """The demo data, then `job` applied with the first node tainted until the job's first
    runner runs on the second, the one a test will lose (in kuberay mode its Ray pods, which
    come first, are there too)."""
    core = client.CoreV1Api(cluster.api_client())
    first, second = cluster.node_names
    name = job["metadata"]["name"]
    demo_data(cluster, namespace)
    drain = {"key": "datajuicer.io/test", "value": "hold", "effect": "NoSchedule"}
    core.patch_node(first, {"spec": {"taints": [drain]}})
    apply(cluster, namespace, job)
    wait_for(
        lambda: runner_on(cluster, namespace, f"{name}-runner-1", name) == second,
        300,
        f"{name}-runner-1 running on {second}",
    )
    core.patch_node(first, {"spec": {"taints": None}})


def demo_on_the_second_node(cluster: Cluster, namespace: str) -> Path:
    """The demo job (a slow first op; a lost node tolerated 5 s), its first attempt running on
    the second node (`on_the_second_node`); its work dir."""
    job = with_test_ops(example_job())
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 3}})
    job["spec"]["runner"].update({"nodeLostTolerationSeconds": 5, "gracePeriodSeconds": 1})
    on_the_second_node(cluster, namespace, job)
    return cluster.node.pvc_dir(namespace, "demo-data") / ".datajuicer" / namespace / "demo"


def test_a_lost_node_s_runner_is_replaced_on_the_other_node_to_identical_output(
    two_nodes: Cluster, reference: bytes, tmp_path: Path
) -> None:
    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    core = client.CoreV1Api(api)
    first, second = two_nodes.node_names
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    try:
        work = demo_on_the_second_node(two_nodes, namespace)
        wait_for(lambda: WorkDir(work).plan_path.exists(), 120, "the plan")
        # A random instant while the runner works: a deliberate delay, not a synchronisation.
        time.sleep(random.uniform(0.5, 4.0))
        two_nodes.node_named(second).lose()

        done = wait_condition(two_nodes, namespace, "demo", "Finished", timeout=420)
        status = done["status"]
        assert status["phase"] == "Succeeded", status
        out = two_nodes.node.pvc_dir(namespace, "demo-data") / "output" / "result.jsonl"
        assert out.read_bytes() == reference
        first_attempt = status["attempts"][0]
        assert first_attempt["stopReason"] == "NodeLost", status["attempts"]
        assert status["attempts"][-1]["exitCode"] == 0
        # The retry avoided the lost node (tainted unreachable), and the lost pod is gone.
        names = [p["metadata"]["name"] for p in runner_pods(two_nodes, namespace, "demo")]
        assert "demo-runner-1" not in names
        last = core.read_namespaced_pod(names[-1], namespace)
        assert last.spec.node_name == first
        lost = [e for e in events(two_nodes, namespace, "demo") if e["reason"] == "RunnerLost"]
        assert lost and f"demo-runner-1 on node {second}" in lost[0]["message"]
        assert lost[0]["type"] == "Warning"
        node = core.read_node(second)
        assert {t.key for t in node.spec.taints or []} >= {"node.kubernetes.io/unreachable"}
    finally:
        if op.proc is not None and op.proc.poll() is None:
            assert op.stop() == 0, op.tail()
        api.close()


def test_a_lost_node_under_a_ray_cluster_is_replaced_and_the_job_resumes(
    two_nodes: Cluster, tmp_path: Path
) -> None:
    """kuberay mode: the runner, the Ray head and its worker all on the node that dies."""
    from tests.k8s.test_operator_kuberay_e2e import JOB, kuberay_job

    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    core = client.CoreV1Api(api)
    first, second = two_nodes.node_names
    job = with_test_ops(kuberay_job(workers=1))
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 3}})
    job["spec"]["runner"].update({"nodeLostTolerationSeconds": 5, "gracePeriodSeconds": 1})
    expected = local_reference(
        tmp_path / "reference", job["spec"]["recipe"], {"input/demo.jsonl": DEMO_DATA.read_text()}
    )
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    try:
        on_the_second_node(two_nodes, namespace, job)
        ray_pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster").items
        assert {p.spec.node_name for p in ray_pods} == {second}, "the Ray pods are elsewhere"
        work = two_nodes.node.pvc_dir(namespace, f"{JOB}-data") / ".datajuicer" / namespace / JOB
        wait_for(lambda: WorkDir(work).plan_path.exists(), 300, "the plan")
        two_nodes.node_named(second).lose()

        done = wait_condition(two_nodes, namespace, JOB, "Finished", timeout=600)
        status = done["status"]
        assert status["phase"] == "Succeeded", status
        out = two_nodes.node.pvc_dir(namespace, f"{JOB}-data") / "output" / "result.jsonl"
        assert out.read_bytes() == expected
        assert status["attempts"][0]["stopReason"] == "NodeLost", status["attempts"]
        reasons = {e["reason"] for e in events(two_nodes, namespace, JOB)}
        assert {"RunnerLost", "RayPodLost"} <= reasons, reasons
        ray_pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster").items
        assert all(p.spec.node_name == first for p in ray_pods)  # replaced on the other node
    finally:
        if op.proc is not None and op.proc.poll() is None:
            assert op.stop() == 0, op.tail()
        api.close()


def kuberay_on_the_second_node(cluster: Cluster, namespace: str) -> list[Any]:
    """The kuberay e2e job (a slow first op; a lost node tolerated for an hour, so nothing is
    evicted while a test looks) with its head, its worker and its runner on the second node
    (`on_the_second_node`); its two Ray pods."""
    from tests.k8s.test_operator_kuberay_e2e import kuberay_job

    job = with_test_ops(kuberay_job(workers=1))
    job["spec"]["recipe"]["process"].insert(0, {"slow_mapper": {"seconds": 30}})
    job["spec"]["runner"].update({"nodeLostTolerationSeconds": 3600, "gracePeriodSeconds": 1})
    on_the_second_node(cluster, namespace, job)
    core = client.CoreV1Api(cluster.api_client())
    ray_pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster").items
    second = cluster.node_names[1]
    assert {p.spec.node_name for p in ray_pods} == {second}, "the Ray pods are elsewhere"
    assert len(ray_pods) == 2, [p.metadata.name for p in ray_pods]
    return list(ray_pods)


def ray_pods_removed(cluster: Cluster, namespace: str, job: str, ray_pods: list[Any]) -> list[Any]:
    """Waits (180 s) until no Ray pod is left in `namespace`; the job's `RayPodLost` Events,
    which must name every one of `ray_pods`."""
    core = client.CoreV1Api(cluster.api_client())
    left: list[str] = []

    def gone() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster").items
        left[:] = [f"{p.metadata.name} (deleted: {p.metadata.deletion_timestamp})" for p in pods]
        return not left

    try:
        wait_for(gone, 180, "the job's Ray pods on the lost node to be removed")
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}; left: {left}") from None
    lost = [e for e in events(cluster, namespace, job) if e["reason"] == "RayPodLost"]
    named = " ".join(e["message"] for e in lost)
    assert all(p.metadata.name in named for p in ray_pods), (named, ray_pods)
    return lost


def test_a_suspended_jobs_ray_pods_on_a_lost_node_are_removed(
    two_nodes: Cluster, tmp_path: Path
) -> None:
    """kuberay mode: the node under the RayCluster is lost and the job suspended at once, before
    Kubernetes evicts anything (the pods tolerate the lost node for an hour). The operator
    deletes the RayCluster; the garbage collector deletes its pods, which no kubelet ends, and
    KubeRay no longer cares for them: the operator removes them (they stayed for good before)."""
    from tests.k8s.test_operator_kuberay_e2e import JOB

    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    custom = client.CustomObjectsApi(api)
    second = two_nodes.node_names[1]
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    try:
        ray_pods = kuberay_on_the_second_node(two_nodes, namespace)
        two_nodes.node_named(second).lose()
        custom.patch_namespaced_custom_object(
            contract.GROUP,
            contract.VERSION,
            namespace,
            contract.PLURAL,
            JOB,
            {"spec": {"suspend": True}},
        )
        wait_phase(two_nodes, namespace, JOB, ("Suspended",), timeout=180)
        lost = ray_pods_removed(two_nodes, namespace, JOB, ray_pods)
        assert lost, events(two_nodes, namespace, JOB)
        assert f"on node {second}" in lost[-1]["message"]
        assert "the job is suspended" in lost[-1]["message"]
    finally:
        if op.proc is not None and op.proc.poll() is None:
            assert op.stop() == 0, op.tail()
        api.close()


def test_a_settled_jobs_ray_pods_on_a_lost_node_are_removed_after_an_operator_restart(
    two_nodes: Cluster, tmp_path: Path
) -> None:
    """kuberay mode: a job settles (here: Suspended) while its Ray pods are on a lost node, and
    its operator goes away before it removes them; the job's RayCluster is gone. A restarted
    operator skips settled jobs at start-up, and nothing else told it of the pods: they stayed
    for good. Now a Ray pod being deleted wakes its job (`wakeup.ray_pod_wakes`), which removes it.

    The operator is stopped before the job is suspended, and the test writes what the operator
    would have (the spec's suspend, the RayCluster deleted, the runner pod removed, the status
    Suspended at the new generation), so that no timing decides whether the first operator
    removes the pods itself."""
    from tests.k8s.test_operator_kuberay_e2e import JOB

    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    second = two_nodes.node_names[1]
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    restarted = OperatorProcess(two_nodes, namespace, tmp_path / "operator-2.log")
    try:
        ray_pods = kuberay_on_the_second_node(two_nodes, namespace)
        assert op.stop() == 0, op.tail()
        two_nodes.node_named(second).lose()
        body = custom.patch_namespaced_custom_object(
            contract.GROUP,
            contract.VERSION,
            namespace,
            contract.PLURAL,
            JOB,
            {"spec": {"suspend": True}},
        )
        cluster_name = ray_cluster_name(JOB)
        custom.delete_namespaced_custom_object(
            "ray.io",
            "v1",
            namespace,
            "rayclusters",
            cluster_name,
            body=client.V1DeleteOptions(propagation_policy="Background"),
        )
        for runner in runner_pods(two_nodes, namespace, JOB):
            core.delete_namespaced_pod(
                runner["metadata"]["name"], namespace, grace_period_seconds=0
            )
        custom.patch_namespaced_custom_object_status(
            contract.GROUP,
            contract.VERSION,
            namespace,
            contract.PLURAL,
            JOB,
            {
                "status": {
                    "phase": "Suspended",
                    "observedGeneration": body["metadata"]["generation"],
                }
            },
        )

        def being_deleted() -> bool:
            pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster").items
            return len(pods) == 2 and all(p.metadata.deletion_timestamp for p in pods)

        wait_for(being_deleted, 120, "the garbage collector to delete the RayCluster's pods")
        restarted.start()
        named = " ".join(
            e["message"] for e in ray_pods_removed(two_nodes, namespace, JOB, ray_pods)
        )
        assert "the job is suspended" in named
        assert job_obj(two_nodes, namespace, JOB)["status"]["phase"] == "Suspended"
    finally:
        for proc in (op, restarted):
            if proc.proc is not None and proc.proc.poll() is None:
                assert proc.stop() == 0, proc.tail()
        api.close()


def commit_records(work: Path) -> dict[str, list[dict[str, Any]]]:
    """Every commit log of the work dir (partitions' checkpoints, global decisions), by path."""
    return {str(p.relative_to(work)): read_records(p) for p in sorted(work.rglob("commits.jsonl"))}


def of_epoch(logs: dict[str, list[dict[str, Any]]], epoch: int) -> dict[str, list[dict[str, Any]]]:
    return {path: [r for r in records if r.get("epoch") == epoch] for path, records in logs.items()}


def progress_run(cluster: Cluster, namespace: str) -> str | None:
    """The run whose progress the job's status shows."""
    return ((job_obj(cluster, namespace, "demo").get("status") or {}).get("progress") or {}).get(
        "runId"
    )


class JobHistory:
    """Every version of a job's status from now on, as a watch delivers them (not sampled)."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.name = name
        self.statuses: list[dict[str, Any]] = []
        self._stop = threading.Event()
        path = f"/apis/{contract.API_VERSION}/namespaces/{namespace}/{contract.PLURAL}"
        log = logging.getLogger(f"job-history.{namespace}")
        self._thread = threading.Thread(
            target=run_informer,
            args=(cluster.control_plane.rest, path, self._on, self._stop, log),
            daemon=True,
        )

    def _on(self, kind: str, obj: dict[str, Any]) -> None:
        items = obj["items"] if kind == "SYNC" else [obj]
        for item in items:
            if item["metadata"]["name"] == self.name:
                self.statuses.append(item.get("status") or {})

    def __enter__(self) -> JobHistory:
        self._thread.start()
        wait_for(lambda: self.statuses, 30, f"the watch of djjob {self.name}")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()


def test_a_runner_cut_off_with_its_node_runs_on_but_commits_nothing_once_replaced(
    two_nodes: Cluster, reference: bytes, tmp_path: Path
) -> None:
    """The lost node's runner is frozen, not killed, while Kubernetes finds the node lost and
    the next attempt takes over on the other node; once that attempt has committed, the old
    runner runs again. Its next commit is refused (its claim is superseded): it exits 5 within
    a bound, commits nothing, and neither its status.json nor its progress reaches the job."""
    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    first, second = two_nodes.node_names
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    lost = two_nodes.node_named(second)
    try:
        work = demo_on_the_second_node(two_nodes, namespace)
        wait_for(lambda: any(commit_records(work).values()), 120, "the first checkpoint")

        frozen = lost.lose(freeze=True)
        assert frozen, "no process of the lost node's pods to freeze"
        old = read_claim(work)
        assert old is not None
        at_freeze = of_epoch(commit_records(work), old["epoch"])
        # A volume shared by hosts: the runner of another host does not see this host's flock
        # (only the claims fence the two). Both process nodes share one kernel here, so the lock
        # file the frozen runner holds is replaced: the next runner's flock is a lock of its own.
        WorkDir(work).lock_path.unlink()

        wait_for(
            lambda: runner_on(two_nodes, namespace, "demo-runner-2") == first,
            240,
            f"demo-runner-2 running on {first}",
        )
        wait_for(
            lambda: any(
                r.get("epoch", 0) > old["epoch"] for rs in commit_records(work).values() for r in rs
            ),
            120,
            "a commit of the second attempt",
        )
        new = read_claim(work)
        assert new is not None and new["epoch"] > old["epoch"]
        wait_for(
            lambda: progress_run(two_nodes, namespace) == new["run_id"],
            60,
            "the second attempt's progress in the job's status",
        )
        with JobHistory(two_nodes, namespace, "demo") as history:
            assert history.statuses[-1]["phase"] == "Running", history.statuses[-1]
            thawed = lost.thaw()
            assert thawed, "the frozen processes are gone"
            old_runner = lost.runner(namespace, "demo-runner-1")
            # It notices at its next commit: after the op it was in (a slow_mapper call or less).
            wait_for(lambda: old_runner.exit_code() is not None, 60, "the old runner to exit")
            code = old_runner.exit_code()
            done = wait_condition(two_nodes, namespace, "demo", "Finished", timeout=300)
            wait_for(
                lambda: history.statuses[-1].get("phase") == "Succeeded",
                30,
                "the watch to deliver the job's end",
            )
        said = lost.logs(namespace, "demo-runner-1")
        assert code == ExitCode.LOCKED, said
        assert f"superseded by run {new['run_id']}" in said, said
        wait_for(lambda: not lost.leftover_processes(), 30, "no process of the old runner left")
        # Its API token was bound to the pod the operator deleted: whatever it would send to the
        # job's status is refused.
        assert old_runner.kubeconfig is not None
        stale = kubernetes.config.new_client_from_config(config_file=str(old_runner.kubeconfig))
        with pytest.raises(client.ApiException) as refused:
            client.CustomObjectsApi(stale).patch_namespaced_custom_object_status(
                contract.GROUP,
                contract.VERSION,
                namespace,
                contract.PLURAL,
                "demo",
                {"status": {"progress": {"runId": old["run_id"]}}},
            )
        stale.close()
        assert refused.value.status == 401, refused.value

        # Not one commit of the old epoch since the freeze counts. Its check of the claim and
        # its append are two steps (store/fencing.py, "Limits"): frozen between them, it
        # appends that one record when let go, after the newer epoch's, so readers ignore it.
        for path, records in commit_records(work).items():
            before = at_freeze.get(path, [])
            late = of_epoch({path: records}, old["epoch"])[path]
            assert late[: len(before)] == before and len(late) <= len(before) + 1, path
            counted = [r for r in fenced(records, None) if r.get("epoch") == old["epoch"]]
            assert counted == before, path
        status = done["status"]
        assert status["phase"] == "Succeeded", status
        out = two_nodes.node.pvc_dir(namespace, "demo-data") / "output" / "result.jsonl"
        assert out.read_bytes() == reference
        assert status["attempts"][0]["stopReason"] == "NodeLost", status["attempts"]
        assert status["progress"]["runId"] == new["run_id"], status["progress"]
        assert WorkDir(work).status_path.exists()
        assert read_claim(work) == new
        # The old runner moved nothing in the job's status from its thaw to the end: the phase
        # went Running -> Succeeded, the progress was only the new run's and never went back.
        phases = [s.get("phase") for s in history.statuses]
        assert set(phases) <= {"Running", "Succeeded"} and phases[-1] == "Succeeded", phases
        assert phases == sorted(phases, key=lambda p: p == "Succeeded"), phases
        progress = [s.get("progress") or {} for s in history.statuses]
        assert {p.get("runId") for p in progress} == {new["run_id"]}, progress
        assert all(p.get("state") != "failed" for p in progress), progress
        done_counts = [p.get("partitionsCompleted") or 0 for p in progress]
        assert done_counts == sorted(done_counts), done_counts
        assert job_obj(two_nodes, namespace, "demo")["status"]["phase"] == "Succeeded"
    finally:
        if op.proc is not None and op.proc.poll() is None:
            assert op.stop() == 0, op.tail()
        api.close()
