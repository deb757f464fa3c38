"""Chaos: many jobs at once on two process nodes while, for a bounded time, something is killed
at random every few seconds: runner processes (SIGKILL), runner pods (deleted), the operator
(SIGKILL, then started again) and, once, a whole node (its processes killed, nothing more
reported, so Kubernetes must find it lost and evict its pods).

Every job must end Succeeded with the output of a local run; at no sample may a job have two
runner pods running; no pod may outlive or lack its job; and once the node is lost no new
runner pod may land on it. The counts (jobs, kills of each kind, restarts, outcome) are printed
and written to `chaos-summary.json` in the test's directory.

`DJ_CHAOS_JOBS` (default 20) and `DJ_CHAOS_SECONDS` (default 120) size it. The jobs run the
local engine (their inputs are small), so that 20 of them fit a 2-core machine; kuberay-mode
losses (head, worker) are tested one at a time in test_operator_kuberay_e2e.py and
test_object_storage.py.
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

from tests.harness.cluster import Cluster
from tests.harness.controlplane import NODE_MONITOR_GRACE_SECONDS
from tests.harness.waiting import wait_for
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

pytestmark = pytest.mark.k8s

JOBS = int(os.environ.get("DJ_CHAOS_JOBS", "20"))
CHAOS_SECONDS = float(os.environ.get("DJ_CHAOS_SECONDS", "120"))
#: Between two kills, at random (a deliberate pace of the chaos, not a synchronisation).
PAUSE_S = (2.0, 6.0)
RUNNER_SELECTOR = "app.kubernetes.io/component=runner"


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


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with own_cluster(tmp_path_factory.mktemp("chaos"), kuberay=False, nodes=2) as cluster:
        yield cluster


def chaos_job(name: str) -> dict:
    job = with_test_ops(example_job())
    job["metadata"]["name"] = name
    job["spec"]["recipe"]["project_name"] = name
    # An identity op that takes its time, so that every job still runs when the chaos ends
    # (5 partitions of a quarter of the chaos each): every kind of kill lands on working jobs.
    slow = {"slow_mapper": {"seconds": round(CHAOS_SECONDS / 4, 1)}}
    job["spec"]["recipe"]["process"].insert(0, slow)
    job["spec"]["recipe"]["np"] = 1
    job["spec"]["runner"].update({"nodeLostTolerationSeconds": 5, "gracePeriodSeconds": 2})
    job["spec"]["backoffLimit"] = 100  # every kill is a retryable end; none may fail the job
    return job


def active_runners(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=RUNNER_SELECTOR).items
    return [p for p in pods if p.status.phase in ("Pending", "Running")]


def sample(core: client.CoreV1Api, namespace: str, chaos: Chaos) -> None:
    """No job has two runner pods running (not being deleted) at once."""
    running: Counter[str] = Counter()
    for pod in active_runners(core, namespace):
        if pod.spec.node_name:
            created = pod.metadata.creation_timestamp.timestamp()
            chaos.placed[pod.metadata.name] = (pod.spec.node_name, created)
        if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None:
            running[pod.metadata.labels["datajuicer.io/job"]] += 1
    chaos.samples += 1
    chaos.two_running += [job for job, n in running.items() if n > 1]


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
    kind = rng.choice(["runner-process"] * 3 + ["runner-pod"] * 2 + ["operator"])
    if kind == "operator":
        assert op.proc is not None
        os.killpg(op.proc.pid, signal.SIGKILL)
        op.proc.wait(10)
        op.start()
        chaos.kills["operator"] += 1
        return
    running = [
        p
        for p in active_runners(core, namespace)
        if p.status.phase == "Running"
        and p.metadata.deletion_timestamp is None
        and p.spec.node_name != chaos.lost_node
    ]
    if not running:
        return
    pod = rng.choice(running)
    if kind == "runner-pod":
        core.delete_namespaced_pod(pod.metadata.name, namespace)
        chaos.kills["runner-pod"] += 1
        return
    try:
        cluster.node_named(pod.spec.node_name).kill_pod_process(
            namespace, pod.metadata.name, signal.SIGKILL
        )
        chaos.kills["runner-process"] += 1
    except (KeyError, RuntimeError):
        pass  # the pod ended between the listing and the kill


def test_jobs_survive_random_kills_and_a_lost_node(
    two_nodes: Cluster, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rng = random.Random()
    reference = local_reference(
        tmp_path_factory.mktemp("chaos-reference"),
        chaos_job("ref")["spec"]["recipe"],
        {"input/demo.jsonl": DEMO_DATA.read_text()},
    )
    namespace = two_nodes.create_namespace()
    api = two_nodes.api_client()
    core = client.CoreV1Api(api)
    op = OperatorProcess(two_nodes, namespace, tmp_path / "operator.log").start()
    chaos = Chaos()
    names = [f"chaos-{i:02d}" for i in range(1, JOBS + 1)]
    started = time.monotonic()
    try:
        demo_data(two_nodes, namespace)
        apply(two_nodes, namespace, *(chaos_job(name) for name in names))
        lose_at = started + CHAOS_SECONDS * rng.uniform(0.2, 0.4)
        while time.monotonic() - started < CHAOS_SECONDS:
            time.sleep(rng.uniform(*PAUSE_S))  # the chaos's pace
            sample(core, namespace, chaos)
            lose = chaos.lost_node is None and time.monotonic() >= lose_at
            kill_something(two_nodes, core, namespace, op, chaos, rng, lose)

        def all_finished() -> bool:
            sample(core, namespace, chaos)
            return all(
                (job_obj(two_nodes, namespace, n).get("status") or {}).get("phase")
                in ("Succeeded", "Failed", "PartiallySucceeded")
                for n in names
            )

        wait_for(all_finished, 900, f"all {JOBS} jobs finished", interval=2.0)
        jobs = {n: job_obj(two_nodes, namespace, n) for n in names}
        summary = {
            "jobs": JOBS,
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
            "samples": chaos.samples,
            "wall_seconds": round(time.monotonic() - started, 1),
        }
        (tmp_path / "chaos-summary.json").write_text(json.dumps(summary, indent=2))
        print("chaos summary:", json.dumps(summary))
        assert summary["phases"] == {"Succeeded": JOBS}, summary
        assert chaos.two_running == [], f"jobs with two runners running: {chaos.two_running}"
        assert chaos.kills["node"] == 1 and sum(chaos.kills.values()) >= 10, summary
        assert summary["runners_lost_with_the_node"] >= 1, f"the lost node ran no runner: {summary}"
        for name in names:
            out = two_nodes.node.pvc_dir(namespace, f"{name}-data") / "output" / "result.jsonl"
            assert out.read_bytes() == reference, f"{name}: output differs from a local run"
        # No pod without its job; none on the lost node any more; and once Kubernetes had found
        # the node lost (its grace period, plus a margin), no runner pod was placed there.
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
