"""RayClusters for the Kubernetes tests: small manifests with their own ports, a driver pod that
reaches a cluster through its head Service, and the waits on KubeRay's status."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from kubernetes import client

from dj_runner import contract
from tests.harness.ports import RayPorts
from tests.harness.waiting import wait_for
from tests.k8s.podutil import python_pod, wait_phase

Obj = dict[str, Any]
IMAGE = "rayproject/ray:2.60.0"  # not pulled by the process node; real clusters would use it
# Each Ray node: 1 CPU and a small object store (Ray's default is 30 % of the host's memory,
# for every node on the host).
OBJECT_STORE_BYTES = "80000000"
RAY_ENV = [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}]
RESOURCES = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}


def ray_cluster(name: str, ports: RayPorts, workers: int = 1, grace_seconds: int = 30) -> Obj:
    """A RayCluster: a head (no CPUs for tasks) and `workers` workers of 1 CPU, on `ports`.

    On SIGTERM `ray start` drains its node through the GCS for up to
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (30 s); when the whole cluster goes at once the GCS is
    gone and a worker waits that long, until the grace period ends it.
    """
    head_params = {
        **ports.ray_start_params(),
        "num-cpus": "0",
        "object-store-memory": OBJECT_STORE_BYTES,
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "headGroupSpec": {
                "rayStartParams": head_params,
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "ray-head",
                                "image": IMAGE,
                                "ports": ports.container_ports(),
                                "env": RAY_ENV,
                                "resources": RESOURCES,
                            }
                        ],
                        "terminationGracePeriodSeconds": grace_seconds,
                    }
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "workers",
                    "replicas": workers,
                    "minReplicas": 0,
                    "maxReplicas": max(workers, 1),
                    "rayStartParams": {"object-store-memory": OBJECT_STORE_BYTES},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-worker",
                                    "image": IMAGE,
                                    "env": RAY_ENV,
                                    "resources": RESOURCES,
                                }
                            ],
                            "terminationGracePeriodSeconds": grace_seconds,
                        }
                    },
                }
            ],
        },
    }


def create(custom: client.CustomObjectsApi, namespace: str, manifest: Obj) -> Obj:
    return custom.create_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters", manifest, field_validation="Strict"
    )


def get(custom: client.CustomObjectsApi, namespace: str, name: str) -> Obj:
    return custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", name)


def head_pod_ready(cluster: Obj) -> bool:
    conditions = (cluster.get("status") or {}).get("conditions") or []
    return any(c["type"] == "HeadPodReady" and c["status"] == "True" for c in conditions)


def wait_ready(
    custom: client.CustomObjectsApi, namespace: str, name: str, workers: int, timeout: float = 120
) -> Obj:
    """Wait for `state: ready`, HeadPodReady and every worker Ready. KubeRay's `ready` means
    every Ray process runs (there are no probes); the nodes join Ray a few seconds later."""

    def ready() -> Obj | None:
        cluster = get(custom, namespace, name)
        status = cluster.get("status") or {}
        ok = (
            status.get("state") == "ready"
            and head_pod_ready(cluster)
            and status.get("readyWorkerReplicas", 0) == workers
        )
        return cluster if ok else None

    return wait_for(ready, timeout, f"RayCluster {namespace}/{name} ready with {workers} workers")


def ray_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"ray.io/cluster={name}").items


def wait_running(
    core: client.CoreV1Api, namespace: str, name: str, count: int, timeout: float = 300
) -> list[client.V1Pod]:
    """The RayCluster's pods once `count` of them run (a head and its workers)."""

    def running() -> list[client.V1Pod] | None:
        pods = ray_pods(core, namespace, name)
        return pods if sum(p.status.phase == "Running" for p in pods) == count else None

    return wait_for(running, timeout, f"{count} pods of RayCluster {name} running", interval=0.5)


# The driver: connects over Ray Client (retrying the first connect, which can fail right after
# the head starts), waits for the expected alive nodes, runs one task pinned to each worker node,
# and prints what it saw as JSON.
DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    address, expected = sys.argv[1], int(sys.argv[2])
    deadline = time.monotonic() + 120
    while True:
        try:
            ray.init(address, logging_level="ERROR")
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            print(f"connect to {address} failed, retrying: {exc}", flush=True)
            time.sleep(2)
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        if len(alive) >= expected:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(alive)} of {expected} nodes alive")
        time.sleep(0.5)
    workers = [n for n in alive if "node:__internal_head__" not in n["Resources"]]

    @ray.remote(num_cpus=1)
    def where():
        return ray.get_runtime_context().get_node_id()

    pinned = [
        where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(w["NodeID"], soft=False))
        for w in workers
    ]
    ran_on = ray.get([task.remote() for task in pinned], timeout=60)
    print("REPORT " + json.dumps({
        "alive": sorted(n["NodeID"] for n in alive),
        "workers": sorted(w["NodeID"] for w in workers),
        "dead": sorted(n["NodeID"] for n in ray.nodes() if not n["Alive"]),
        "ran_on": sorted(ran_on),
    }))
    """
)


def client_address(cluster: str, namespace: str, ports: RayPorts) -> str:
    """What a pod in the cluster would use: the head Service's cluster DNS name."""
    head = f"{cluster}{contract.RAY_HEAD_SERVICE_SUFFIX}"
    return f"ray://{head}.{namespace}.svc.cluster.local:{ports.client}"


def run_driver(
    core: client.CoreV1Api,
    logs: Any,
    namespace: str,
    pod_name: str,
    address: str,
    expected_nodes: int,
    timeout: float = 180,
) -> Obj:
    """Run the driver as a pod; return its report. `logs(namespace, pod)` reads its output."""
    manifest = python_pod(pod_name, DRIVER, args=[address, str(expected_nodes)], env=list(RAY_ENV))
    core.create_namespaced_pod(namespace, manifest)
    done = wait_phase(core, namespace, pod_name, ("Succeeded", "Failed"), timeout=timeout)
    output = logs(namespace, pod_name)
    assert done["status"]["phase"] == "Succeeded", output
    return json.loads(output.split("REPORT ", 1)[1].splitlines()[0])
