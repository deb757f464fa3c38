"""Chaos: many jobs at once, local and kuberay mode, on two process nodes (the real KubeRay
operator runs the RayClusters) while, for a bounded time, something is killed at random every
few seconds: runner processes (SIGKILL), runner pods (deleted), Ray head and worker pods of the
kuberay jobs (deleted at once, as a crashed machine goes), the operator (SIGKILL, then started
again) and, once, a whole node (its processes killed, nothing more reported, so Kubernetes must
find it lost and evict its pods). The first kills cover every kind once (in random order, each
as soon as it has a target); the rest are drawn at random.

Every job must end Succeeded with the output of a local run of the same recipe; at no sample
may a job have two runner pods running, or a kuberay job more than one RayCluster; every pod
must be owned by its job (a Ray pod by its job's RayCluster); once the node is lost no new
runner pod may land on it, and none of the namespace's pods may be left there; once the jobs
have ended no RayCluster and no Ray pod may be left. The counts (jobs, kills of each kind,
restarts, outcome) are printed and written to `chaos-summary.json` in the test's directory.

`DJ_CHAOS_JOBS` (default 20, in all), `DJ_CHAOS_KUBERAY_JOBS` (default 1, of those) and
`DJ_CHAOS_SECONDS` (default 120) size it. Most jobs run the local engine (their inputs are
small), so that 20 of them fit a 2-core machine; a kuberay job has a head (no CPUs for tasks)
and one worker of 1 CPU.

One kuberay job by default, not more: the process nodes run every pod in the host's network
namespace, and Ray Client's server on each head gives each client a server of its own on the
first free port from 23000 up (its check, then the bind seconds later in a new process). Two
heads whose runners connect at once can both pick the same port, and gRPC binds it twice
(SO_REUSEPORT), so one runner can end up driving the other job's cluster. In a real cluster each
pod has its own network namespace.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client

from dj_operator.build.names import ray_cluster as ray_cluster_name
from tests.harness.cluster import Cluster
from tests.harness.controlplane import NODE_MONITOR_GRACE_SECONDS
from tests.harness.waiting import WaitTimeout, wait_for
from tests.k8s.operator_support import (
    DEMO_DATA,
    OperatorProcess,
    apply,
    demo_data,
    example_job,
    job_obj,
    local_reference,
    own_cluster,
    with_test_ops,
)
from tests.k8s.test_operator_kuberay_e2e import kuberay_job

# The cluster (two nodes and the KubeRay operator) takes minutes to start on a loaded machine,
# the jobs as long again: past the suite's default of 600 s.
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1200)]

JOBS = int(os.environ.get("DJ_CHAOS_JOBS", "20"))
KUBERAY_JOBS = int(os.environ.get("DJ_CHAOS_KUBERAY_JOBS", "1"))
CHAOS_SECONDS = float(os.environ.get("DJ_CHAOS_SECONDS", "120"))
#: Between two kills, at random (a deliberate pace of the chaos, not a synchronisation).
PAUSE_S = (2.0, 6.0)
RUNNER_SELECTOR = "app.kubernetes.io/component=runner"
#: Every kind of kill but the node's (lost once, at a random instant of its own).
KINDS = ("runner-process", "runner-pod", "ray-head", "ray-worker", "operator")
#: Their weights in the random draws after each kind's first kill.
WEIGHTS = (3, 2, 1, 1, 1)


@dataclass
class Chaos:
    """What was done and seen: kills by kind, the node lost and when, violations seen."""

    kills: Counter[str] = field(default_factory=Counter)
    lost_node: str | None = None
    lost_at: float | None = None
    two_running: list[str] = field(default_factory=list)
    samples: int = 0
    #: Every runner pod seen bound to a node: name -> (node, creation time).
    placed: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: Kinds of kill not done yet: each is tried first, as soon as it has a target.
    pending: list[str] = field(default_factory=list)
    #: Jobs seen owning more than one RayCluster at once.
    two_clusters: list[str] = field(default_factory=list)
    #: The uids of the RayClusters seen, by job.
    clusters: dict[str, set[str]] = field(default_factory=dict)
    #: The jobs, and which of them run in kuberay mode (their RayClusters' names, by job).
    jobs: list[str] = field(default_factory=list)
    ray_cluster_of: dict[str, str] = field(default_factory=dict)
    #: Pods seen without the right owner: a runner pod its job, a Ray pod its job's RayCluster.
    bad_owners: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with own_cluster(tmp_path_factory.mktemp("chaos"), kuberay=True, nodes=2) as cluster:
        yield cluster


def chaos_job(name: str, slow_s: float = CHAOS_SECONDS / 4) -> dict:
    job = with_test_ops(example_job())
    job["metadata"]["name"] = name
    job["spec"]["recipe"]["project_name"] = name
    # An identity op that takes its time, so that every job still runs when the chaos ends
    # (5 partitions of a quarter of the chaos each): every kind of kill lands on working jobs.
    slow = {"slow_mapper": {"seconds": round(slow_s, 1)}}
    job["spec"]["recipe"]["process"].insert(0, slow)
    job["spec"]["recipe"]["np"] = 1
    job["spec"]["runner"].update({"nodeLostTolerationSeconds": 5, "gracePeriodSeconds": 2})
    job["spec"]["backoffLimit"] = 100  # every kill is a retryable end; none may fail the job
    return job


def chaos_kuberay_job(name: str) -> dict:
    """The same job (recipe, runner, backoff) in kuberay mode: a RayCluster of a head with no
    CPUs for tasks and one worker of 1 CPU, on ports of its own, on a claim every Ray pod
    mounts. Its worker runs the five partitions one after the other (the local engine runs
    them side by side): an eighth of the chaos each (the op is an identity: same output)."""
    job = chaos_job(name, CHAOS_SECONDS / 8)
    job["spec"]["ray"] = kuberay_job(workers=1)["spec"]["ray"]
    job["spec"]["storage"]["volumeClaimTemplate"]["spec"]["accessModes"] = ["ReadWriteMany"]
    return job


def active_runners(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=RUNNER_SELECTOR).items
    return [p for p in pods if p.status.phase in ("Pending", "Running")]


def sample(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, namespace: str, chaos: Chaos
) -> None:
    """No job has two runner pods running (not being deleted) at once, nor two RayClusters."""
    running: Counter[str] = Counter()
    ray_owners = {("RayCluster", rc) for rc in chaos.ray_cluster_of.values()}
    job_owners = {("DataJuicerJob", job) for job in chaos.jobs}
    for pod in core.list_namespaced_pod(namespace).items:
        owners = [(o.kind, o.name) for o in pod.metadata.owner_references or []]
        is_ray = "ray.io/cluster" in (pod.metadata.labels or {})
        if len(owners) != 1 or owners[0] not in (ray_owners if is_ray else job_owners):
            chaos.bad_owners.append(f"{pod.metadata.name}: {owners}")
    for pod in active_runners(core, namespace):
        if pod.spec.node_name:
            created = pod.metadata.creation_timestamp.timestamp()
            chaos.placed[pod.metadata.name] = (pod.spec.node_name, created)
        if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None:
            running[pod.metadata.labels["datajuicer.io/job"]] += 1
    chaos.samples += 1
    chaos.two_running += [job for job, n in running.items() if n > 1]
    owned: Counter[str] = Counter()
    for rc in ray_clusters(custom, namespace):
        for owner in rc["metadata"].get("ownerReferences") or []:
            owned[owner["name"]] += 1
            chaos.clusters.setdefault(owner["name"], set()).add(rc["metadata"]["uid"])
    chaos.two_clusters += [job for job, n in owned.items() if n > 1]


def ray_clusters(custom: client.CustomObjectsApi, namespace: str) -> list[dict]:
    found = custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters")
    return list(found["items"])


def ray_pods(
    core: client.CoreV1Api, namespace: str, node_type: str, lost: str | None
) -> list[client.V1Pod]:
    """Running Ray pods of a type (head, worker), not being deleted, not on the lost node."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"ray.io/node-type={node_type}")
    return [
        p
        for p in pods.items
        if p.status.phase == "Running"
        and p.metadata.deletion_timestamp is None
        and p.spec.node_name != lost
    ]


def kill_something(
    cluster: Cluster,
    core: client.CoreV1Api,
    namespace: str,
    op: OperatorProcess,
    chaos: Chaos,
    rng: random.Random,
    lose_node_now: bool,
) -> None:
    alive = [n for n in cluster.nodes if n.name != chaos.lost_node]
    if lose_node_now:
        node = alive[-1]
        chaos.lost_node, chaos.lost_at = node.name, time.time()
        node.lose()
        chaos.kills["node"] += 1
        return
    # A kind not done yet, if one has a target now; otherwise a random draw.
    for kind in chaos.pending:
        if kill(cluster, core, namespace, op, chaos, rng, kind):
            chaos.pending.remove(kind)
            return
    kind = rng.choices(KINDS, WEIGHTS)[0]
    if kill(cluster, core, namespace, op, chaos, rng, kind) and kind in chaos.pending:
        chaos.pending.remove(kind)


def kill(
    cluster: Cluster,
    core: client.CoreV1Api,
    namespace: str,
    op: OperatorProcess,
    chaos: Chaos,
    rng: random.Random,
    kind: str,
) -> bool:
    """One kill of `kind`, at a random target; False when it has none now."""
    if kind == "operator":
        assert op.proc is not None
        os.killpg(op.proc.pid, signal.SIGKILL)
        op.proc.wait(10)
        op.start()
        chaos.kills["operator"] += 1
        return True
    if kind in ("ray-head", "ray-worker"):
        pods = ray_pods(core, namespace, kind.removeprefix("ray-"), chaos.lost_node)
        if not pods:
            return False
        pod = rng.choice(pods)
        try:
            # At once, as a crashed machine goes (with a grace period Ray drains the node).
            core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
        except client.ApiException as e:
            if e.status != 404:
                raise
            return False  # gone between the listing and the kill
        chaos.kills[kind] += 1
        return True
    running = [
        p
        for p in active_runners(core, namespace)
        if p.status.phase == "Running"
        and p.metadata.deletion_timestamp is None
        and p.spec.node_name != chaos.lost_node
    ]
    if not running:
        return False
    pod = rng.choice(running)
    if kind == "runner-pod":
        core.delete_namespaced_pod(pod.metadata.name, namespace)
        chaos.kills["runner-pod"] += 1
        return True
    try:
        cluster.node_named(pod.spec.node_name).kill_pod_process(
            namespace, pod.metadata.name, signal.SIGKILL
        )
    except (KeyError, RuntimeError):
        return False  # the pod ended between the listing and the kill
    chaos.kills["runner-process"] += 1
    return True


def test_jobs_survive_random_kills_and_a_lost_node(
    two_nodes: Cluster, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert 0 < KUBERAY_JOBS < JOBS, "DJ_CHAOS_KUBERAY_JOBS: some jobs of each mode"
    rng = random.Random()
    reference = local_reference(
        tmp_path_factory.mktemp("chaos-reference"),
        chaos_job("ref")["spec"]["recipe"],
        {"input/demo.jsonl": DEMO_DATA.read_text()},
    )
    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    kuberay = [f"chaos-ray-{i:02d}" for i in range(1, KUBERAY_JOBS + 1)]
    local = [f"chaos-{i:02d}" for i in range(1, JOBS - KUBERAY_JOBS + 1)]
    names = kuberay + local
    chaos = Chaos(pending=rng.sample(KINDS, len(KINDS)), jobs=names)
    chaos.ray_cluster_of = {n: ray_cluster_name(n) for n in kuberay}
    started = time.monotonic()
    try:
        demo_data(two_nodes, namespace)
        # The kuberay jobs first: their clusters take the longest to start.
        jobs_applied = [chaos_kuberay_job(n) for n in kuberay] + [chaos_job(n) for n in local]
        apply(two_nodes, namespace, *jobs_applied)
        lose_at = started + CHAOS_SECONDS * rng.uniform(0.2, 0.4)
        while time.monotonic() - started < CHAOS_SECONDS:
            time.sleep(rng.uniform(*PAUSE_S))  # the chaos's pace
            sample(core, custom, namespace, chaos)
            lose = chaos.lost_node is None and time.monotonic() >= lose_at
            kill_something(two_nodes, core, namespace, op, chaos, rng, lose)

        def all_finished() -> bool:
            sample(core, custom, namespace, chaos)
            return all(
                (job_obj(two_nodes, namespace, n).get("status") or {}).get("phase")
                in ("Succeeded", "Failed", "PartiallySucceeded")
                for n in names
            )

        wait_for(all_finished, 900, f"all {JOBS} jobs finished", interval=2.0)

        ray_lost = [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.reason == "RayPodLost" and e.involved_object.name in kuberay
        ]
        jobs = {n: job_obj(two_nodes, namespace, n) for n in names}
        summary = {
            "jobs": JOBS,
            "kuberay_jobs": KUBERAY_JOBS,
            "chaos_seconds": CHAOS_SECONDS,
            "kills": dict(chaos.kills),
            "lost_node": chaos.lost_node,
            "restarts": sum(j["status"].get("restarts", 0) for j in jobs.values()),
            "attempts": sum(len(j["status"].get("attempts", [])) for j in jobs.values()),
            "phases": dict(Counter(j["status"]["phase"] for j in jobs.values())),
            "runners_lost_with_the_node": sum(
                a.get("stopReason") == "NodeLost"
                for j in jobs.values()
                for a in j["status"].get("attempts", [])
            ),
            "kuberay_restarts": sum(jobs[n]["status"].get("restarts", 0) for n in kuberay),
            "ray_clusters_created": sum(len(chaos.clusters.get(n, ())) for n in kuberay),
            "ray_pods_lost_events": len(ray_lost),
            "samples": chaos.samples,
            "wall_seconds": round(time.monotonic() - started, 1),
        }
        (tmp_path / "chaos-summary.json").write_text(json.dumps(summary, indent=2))
        print("chaos summary:", json.dumps(summary))
        assert summary["phases"] == {"Succeeded": JOBS}, summary
        # The operator deletes a finished job's RayCluster, and Kubernetes its Ray pods (those
        # of the lost node included: no kubelet ends them there).
        left: list[str] = []

        def rays_gone() -> bool:
            sample(core, custom, namespace, chaos)
            pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster").items
            left[:] = [
                f"RayCluster {rc['metadata']['name']}" for rc in ray_clusters(custom, namespace)
            ]
            left.extend(f"pod {p.metadata.name} on {p.spec.node_name}" for p in pods)
            return not left

        try:
            wait_for(rays_gone, 180, "no RayCluster and no Ray pod left", interval=2.0)
        except WaitTimeout:
            pytest.fail(f"left after the jobs ended: {left}; {json.dumps(summary)}")
        assert chaos.two_running == [], f"jobs with two runners running: {chaos.two_running}"
        assert chaos.kills["node"] == 1 and sum(chaos.kills.values()) >= 10, summary
        assert all(chaos.kills[k] > 0 for k in KINDS), f"a kind of kill never happened: {summary}"
        assert chaos.two_clusters == [], f"jobs with two RayClusters: {chaos.two_clusters}"
        assert set(chaos.clusters) == set(kuberay), f"RayClusters of jobs: {chaos.clusters}"
        assert chaos.bad_owners == [], f"pods without their owner: {chaos.bad_owners[:10]}"
        assert summary["runners_lost_with_the_node"] >= 1, f"the lost node ran no runner: {summary}"
        for name in names:
            out = two_nodes.node.pvc_dir(namespace, f"{name}-data") / "output" / "result.jsonl"
            assert out.read_bytes() == reference, f"{name}: output differs from a local run"
        # No pod without its job (no Ray pod is left); none on the lost node any more; and once
        # Kubernetes had found the node lost (its grace period, plus a margin), no runner pod
        # was placed there.
        for pod in core.list_namespaced_pod(namespace).items:
            owners = [o.name for o in pod.metadata.owner_references or []]
            assert len(owners) == 1 and owners[0] in names, f"{pod.metadata.name}: {owners}"
            assert pod.spec.node_name != chaos.lost_node, pod.metadata.name
        assert chaos.lost_at is not None
        found_lost = chaos.lost_at + NODE_MONITOR_GRACE_SECONDS + 10
        late = [
            n for n, (node, t) in chaos.placed.items() if node == chaos.lost_node and t > found_lost
        ]
        assert late == [], f"runner pods placed on the lost node after it was found lost: {late}"
        config_maps = Counter(
            o.name
            for cm in core.list_namespaced_config_map(namespace).items
            for o in cm.metadata.owner_references or []
        )
        assert all(config_maps[n] == 1 for n in names), config_maps
    finally:
        if op.proc is not None and op.proc.poll() is None:
            op.stop()
        api.close()
