"""Container mode of the process node: pods run from the project image with podman, and the
pod's securityContext is enforced as a kubelet enforces it (non-root, read-only root filesystem,
no capabilities, no privilege escalation), with volumes bind-mounted and the pod's own
ServiceAccount token as its only credential."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import Cluster
from tests.harness.containers import (
    effective_security_context,
    resolve_identity,
    security_args,
)
from tests.harness.podenv import ConfigError
from tests.harness.waiting import wait_for

RESTRICTED: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

# Everything a restricted container can observe about itself, as one JSON line.
PROBE = r"""
import json, os, pathlib
from kubernetes import client, config
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
def writable(path):
    try:
        pathlib.Path(path, "probe").write_text("x")
        return True
    except OSError:
        return False
config.load_kube_config()
review = client.AuthenticationV1Api().create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "root_writable": writable("/opt"), "tmp_writable": writable("/tmp"),
    "data_writable": writable("/data"), "recipe": open("/etc/recipe/recipe.yaml").read(),
    "hostname": os.uname().nodename, "env": os.environ.get("GREETING"),
    "user": review.status.user_info.username,
}))
"""

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def container_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, str]]:
    from tests.harness.containers import project_image

    image = project_image()
    cluster = Cluster(tmp_path_factory.mktemp("containers"), container_mode=True).start()
    try:
        yield cluster, image
    finally:
        cluster.stop()


@pytest.fixture
def ns(container_cluster: tuple[Cluster, str]) -> Iterator[str]:
    cluster, _ = container_cluster
    name = cluster.create_namespace()
    yield name
    cluster.delete_namespace(name)


def _pod(name: str, image: str, command: list[str], **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": RESTRICTED,
    }
    container.update(extra.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            **extra,
        },
    }


def _create(cluster: Cluster, namespace: str, pod: dict[str, Any]) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    pod = json.loads(cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
    return pod.get("status") or {}


def _terminal(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    status = _status(cluster, namespace, name)
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def test_restricted_pod_runs_from_the_image_as_the_kubelet_would_run_it(
    container_cluster: tuple[Cluster, str], ns: str
) -> None:
    cluster, image = container_cluster
    cluster.kubectl(
        "create", "configmap", "recipe", "-n", ns, "--from-literal=recipe.yaml=project_name: x"
    )
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "work"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(claim))
    pod = _pod(
        "probe",
        image,
        ["python", "-c", PROBE],
        container={
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "GREETING", "value": "hello $(POD_NAME)"},
            ],
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "work", "mountPath": "/data"},
                {"name": "recipe", "mountPath": "/etc/recipe", "readOnly": True},
            ],
        },
        volumes=[
            {"name": "tmp", "emptyDir": {}},
            {"name": "work", "persistentVolumeClaim": {"claimName": "work"}},
            {"name": "recipe", "configMap": {"name": "recipe"}},
        ],
    )
    _create(cluster, ns, pod)
    status = wait_for(lambda: _terminal(cluster, ns, "probe"), 180, "pod probe to finish")
    logs = cluster.node.logs(ns, "probe")
    assert status["phase"] == "Succeeded", logs
    seen = json.loads(logs.strip().splitlines()[-1])
    assert seen["uid"] == 10001 and seen["gid"] == 10001
    assert 10001 in seen["groups"]
    assert int(seen["cap_eff"], 16) == 0, "capabilities were not dropped"
    assert seen["no_new_privs"] == "1"
    assert seen["root_writable"] is False, "the root filesystem is writable"
    assert seen["tmp_writable"] is True
    assert seen["data_writable"] is True, "the claim is not writable through fsGroup"
    assert seen["recipe"] == "project_name: x"
    assert seen["hostname"] == "probe"
    assert seen["env"] == "hello probe"
    assert seen["user"] == f"system:serviceaccount:{ns}:default"
    assert (cluster.node.pvc_dir(ns, "work") / "probe").read_text() == "x"


def test_run_as_root_is_refused_like_a_kubelet_refuses_it(
    container_cluster: tuple[Cluster, str], ns: str
) -> None:
    cluster, image = container_cluster
    pod = _pod("rooted", image, ["true"])
    pod["spec"]["securityContext"]["runAsUser"] = 0
    _create(cluster, ns, pod)

    def waiting_reason() -> str | None:
        statuses = _status(cluster, ns, "rooted").get("containerStatuses") or []
        waiting = (statuses[0].get("state") or {}).get("waiting") if statuses else None
        return (waiting or {}).get("reason") == "CreateContainerConfigError" and waiting.get(
            "message"
        )

    message = wait_for(waiting_reason, 120, "CreateContainerConfigError")
    assert "runAsNonRoot" in message


def test_exit_codes_and_sigterm_reach_the_container(
    container_cluster: tuple[Cluster, str], ns: str
) -> None:
    cluster, image = container_cluster
    _create(cluster, ns, _pod("fails", image, ["sh", "-c", "exit 3"]))
    status = wait_for(lambda: _terminal(cluster, ns, "fails"), 120, "pod fails to finish")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (status["phase"], terminated["exitCode"]) == ("Failed", 3)

    script = (
        "import signal, sys, time, pathlib\n"
        "def stop(*_):\n"
        "    pathlib.Path('/data/stopped').write_text('SIGTERM')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "pathlib.Path('/data/started').write_text('yes')\n"
        "while True: time.sleep(1)\n"
    )
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "marks"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(claim))
    pod = _pod(
        "sleeper",
        image,
        ["python", "-c", script],
        container={"volumeMounts": [{"name": "marks", "mountPath": "/data"}]},
        volumes=[{"name": "marks", "persistentVolumeClaim": {"claimName": "marks"}}],
    )
    _create(cluster, ns, pod)
    marks: Path = cluster.node.pvc_dir(ns, "marks")
    wait_for(lambda: (marks / "started").exists(), 120, "the sleeper to start")
    cluster.kubectl("delete", "pod", "sleeper", "-n", ns, "--wait=true", "--timeout=60s")
    assert (marks / "stopped").read_text() == "SIGTERM"


# -- pure logic -----------------------------------------------------------------------------


def test_container_security_context_overrides_the_pods() -> None:
    pod = {"spec": {"securityContext": {"runAsUser": 1, "runAsNonRoot": True, "fsGroup": 5}}}
    container = {"securityContext": {"runAsUser": 2}}
    merged = effective_security_context(pod, container)
    assert merged == {"runAsUser": 2, "runAsNonRoot": True, "fsGroup": 5}


@pytest.mark.parametrize(
    ("sc", "image_user", "expected"),
    [
        ({}, "10001:10001", (10001, 10001, ())),
        ({"runAsUser": 7, "runAsGroup": 8, "fsGroup": 9}, "", (7, 8, (9,))),
        ({"runAsNonRoot": True}, "10001", (10001, 10001, ())),
        ({"supplementalGroups": [3, 4], "fsGroup": 3}, "5:6", (5, 6, (3, 4))),
    ],
)
def test_identity(sc: dict[str, Any], image_user: str, expected: tuple[Any, ...]) -> None:
    identity = resolve_identity(sc, image_user, "main")
    assert (identity.uid, identity.gid, identity.groups) == expected


@pytest.mark.parametrize(
    ("sc", "image_user", "message"),
    [
        ({"runAsNonRoot": True}, "", "will run as root"),
        ({"runAsNonRoot": True, "runAsUser": 0}, "10001", "will run as root"),
        ({"runAsNonRoot": True}, "datajuicer", "non-numeric user"),
    ],
)
def test_identity_refusals(sc: dict[str, Any], image_user: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_identity(sc, image_user, "main")


def test_security_args() -> None:
    args = security_args(
        {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    )
    assert args == [
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop=ALL",
        "--cap-add=NET_BIND_SERVICE",
        "--security-opt",
        "no-new-privileges",
    ]
    assert security_args({"privileged": True, "seccompProfile": {"type": "Unconfined"}}) == [
        "--privileged",
        "--security-opt",
        "seccomp=unconfined",
    ]
