"""Small builders and waits for the Kubernetes tests (plain dict manifests)."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.waiting import wait_for

Obj = dict[str, Any]
PYTHON = "python"  # the project's Python: the process node puts its bin dir first on PATH


def pod(name: str, command: list[str], restart: str = "Never", **spec: Any) -> Obj:
    """A one-container pod manifest running `command`."""
    container: Obj = {"name": "main", "image": "datajuicer/placeholder:latest", "command": command}
    for key in ("env", "envFrom", "volumeMounts", "workingDir", "args"):
        if key in spec:
            container[key] = spec.pop(key)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": spec.pop("labels", {"app": name})},
        "spec": {"restartPolicy": restart, "containers": [container], **spec},
    }


def python_pod(name: str, code: str, restart: str = "Never", **spec: Any) -> Obj:
    return pod(name, [PYTHON, "-c", code], restart, **spec)


def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> Obj:
    return core.api_client.sanitize_for_serialization(core.read_namespaced_pod(name, namespace))


def wait_phase(
    core: client.CoreV1Api, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 60
) -> Obj:
    """Wait until the pod's phase is one of `phases`; return the pod as a dict."""

    def check() -> Obj | None:
        current = read_pod(core, namespace, name)
        return current if current.get("status", {}).get("phase") in phases else None

    return wait_for(check, timeout, f"pod {namespace}/{name} in phase {phases}")


def wait_gone(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 60) -> None:
    def gone() -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout, f"pod {namespace}/{name} removed")


def container_status(pod_obj: Obj, name: str = "main") -> Obj:
    for status in pod_obj.get("status", {}).get("containerStatuses") or []:
        if status["name"] == name:
            return status
    raise AssertionError(f"no status for container {name}: {pod_obj.get('status')}")
