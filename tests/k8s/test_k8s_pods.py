"""Pods run as local processes on the process node, with honest status."""

from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest
from kubernetes import client

from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.podutil import (
    container_status,
    pod,
    python_pod,
    read_pod,
    wait_gone,
    wait_phase,
)

pytestmark = pytest.mark.k8s


def test_pod_runs_and_succeeds(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, python_pod("hello", "print('hello from a pod')"))
    done = wait_phase(core, namespace, "hello", ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert done["spec"]["nodeName"] == k8s_cluster.node.name
    terminated = container_status(done)["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert "hello from a pod" in k8s_cluster.node.logs(namespace, "hello")


def test_failing_pod_is_failed_with_its_exit_code(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, pod("fails", ["sh", "-c", "echo failing; exit 3"]))
    done = wait_phase(core, namespace, "fails", ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Failed"
    terminated = container_status(done)["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"


def test_command_that_cannot_run_fails_like_a_kubelet(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, pod("nocmd", ["/no/such/binary", "--flag"]))
    done = wait_phase(core, namespace, "nocmd", ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Failed"
    terminated = container_status(done)["state"]["terminated"]
    assert terminated["reason"] == "StartError"
    assert terminated["exitCode"] == 128
    assert "/no/such/binary" in terminated["message"]


def test_crashed_container_restarts_and_restart_count_rises(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    code = "import time\nprint('up', flush=True)\nwhile True: time.sleep(1)"
    core.create_namespaced_pod(namespace, python_pod("crashy", code, restart="Always"))
    node = k8s_cluster.node

    def running_with(count: int) -> bool:
        """Running after `count` restarts, and its process has printed "up"."""
        status = container_status(read_pod(core, namespace, "crashy"))
        return (
            status["restartCount"] == count
            and status["state"].get("running") is not None
            and "up" in node.logs(namespace, "crashy")
        )

    wait_for(lambda: running_with(0), 60, "crashy running", ignore=(AssertionError, KeyError))
    first = node.kill_pod_process(namespace, "crashy", signal.SIGKILL)
    wait_for(lambda: running_with(1), 60, "crashy restarted once")
    current = read_pod(core, namespace, "crashy")
    assert current["status"]["phase"] == "Running"
    last = container_status(current)["lastState"]["terminated"]
    assert last["exitCode"] == 128 + signal.SIGKILL
    second = node.kill_pod_process(namespace, "crashy", signal.SIGKILL)
    assert second != first
    wait_for(lambda: running_with(2), 60, "crashy restarted twice")
    assert "up" in node.logs(namespace, "crashy", previous=True)


def test_on_failure_restarts_until_success(core: client.CoreV1Api, namespace: str) -> None:
    # Fails on the first run, succeeds on the second: state kept in an emptyDir.
    code = textwrap.dedent(
        """
        import os, sys
        marker = "/scratch/ran-once"
        if not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit(7)
        print("second run")
        """
    )
    manifest = python_pod(
        "onfailure",
        code,
        restart="OnFailure",
        volumes=[{"name": "scratch", "emptyDir": {}}],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    core.create_namespaced_pod(namespace, manifest)
    done = wait_phase(core, namespace, "onfailure", ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    status = container_status(done)
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 7


def test_environment_and_volumes(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "settings"}, "data": {"mode": "fast", "recipe.yaml": "np: 2\n"}},
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    code = textwrap.dedent(
        """
        import json, os
        keys = ["LITERAL", "EXPANDED", "POD_NAME", "POD_NS", "POD_UID", "POD_APP", "MODE",
                "TOKEN", "CFG_mode", "token", "WORK", "KUBECONFIG"]
        out = {k: os.environ.get(k) for k in keys}
        out["recipe"] = open("/etc/dj/recipe.yaml").read()
        out["secret_file"] = open("/etc/creds/token").read()
        open("/scratch/note", "w").write("x")
        out["scratch"] = os.listdir("/scratch")
        out["arg"] = __import__("sys").argv[1]
        out["mounts"] = json.loads(os.environ["KPN_MOUNTS"])
        out["cwd"] = os.getcwd()
        print("REPORT " + json.dumps(out))
        """
    )
    manifest = pod(
        "envvol",
        ["python", "-c", code],
        args=["--work-dir=/scratch/work"],
        workingDir="/scratch",
        env=[
            {"name": "LITERAL", "value": "plain"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {
                "name": "POD_APP",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
            },
            {
                "name": "MODE",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
            },
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "EXPANDED", "value": "mode=$(MODE), $(LATER) stays"},
            {"name": "LATER", "value": "defined after EXPANDED"},
            {"name": "WORK", "value": "/scratch/work"},
        ],
        envFrom=[
            {"prefix": "CFG_", "configMapRef": {"name": "settings"}},
            {"secretRef": {"name": "creds"}},
        ],
        volumes=[
            {"name": "cfg", "configMap": {"name": "settings"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
            {"name": "scratch", "emptyDir": {}},
        ],
        volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/dj"},
            {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    )
    created = core.create_namespaced_pod(namespace, manifest)
    done = wait_phase(core, namespace, "envvol", ("Succeeded", "Failed"))
    log = k8s_cluster.node.logs(namespace, "envvol")
    assert done["status"]["phase"] == "Succeeded", log
    report = json.loads(log.split("REPORT ", 1)[1])
    pod_dir = k8s_cluster.node.pod_dir(namespace, "envvol")
    scratch = str(pod_dir / "volumes" / "scratch")
    assert report["LITERAL"] == "plain"
    assert report["EXPANDED"] == "mode=fast, $(LATER) stays"
    assert report["POD_NAME"] == "envvol"
    assert report["POD_NS"] == namespace
    assert report["POD_UID"] == created.metadata.uid
    assert report["POD_APP"] == "envvol"
    assert report["MODE"] == "fast"
    assert report["TOKEN"] == "s3cret"
    assert report["CFG_mode"] == "fast"
    assert report["token"] == "s3cret"
    assert report["WORK"] == scratch + "/work"
    assert report["arg"] == f"--work-dir={scratch}/work"
    assert report["cwd"] == scratch
    assert report["recipe"] == "np: 2\n"
    assert report["secret_file"] == "s3cret"
    assert report["scratch"] == ["note"]
    assert report["mounts"]["/scratch"] == scratch
    assert report["mounts"]["/var/run/secrets/kubernetes.io/serviceaccount"].startswith(
        str(pod_dir)
    )
    assert report["KUBECONFIG"] == str(pod_dir / "kubeconfig")
    token_dir = report["mounts"]["/var/run/secrets/kubernetes.io/serviceaccount"]
    assert open(os.path.join(token_dir, "namespace")).read() == namespace
    assert open(os.path.join(token_dir, "token")).read().count(".") == 2


def test_claim_is_one_directory_shared_by_pods(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "work"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    mount = {
        "volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": "work"}}],
        "volumeMounts": [{"name": "work", "mountPath": "/data/work"}],
    }
    writer = "open('/data/work/shard-0.txt', 'w').write('written by the writer')"
    core.create_namespaced_pod(namespace, python_pod("writer", writer, **mount))
    assert wait_phase(core, namespace, "writer", ("Succeeded", "Failed"))["status"]["phase"] == (
        "Succeeded"
    )
    reader = "print('READ', open('/data/work/shard-0.txt').read())"
    core.create_namespaced_pod(namespace, python_pod("reader", reader, **mount))
    assert wait_phase(core, namespace, "reader", ("Succeeded", "Failed"))["status"]["phase"] == (
        "Succeeded"
    )
    assert "READ written by the writer" in k8s_cluster.node.logs(namespace, "reader")
    claim = core.read_namespaced_persistent_volume_claim("work", namespace)
    assert claim.status.phase == "Bound"
    local = k8s_cluster.node.pvc_dir(namespace, "work") / "shard-0.txt"
    assert local.read_text() == "written by the writer"


def test_init_container_runs_first(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    manifest = python_pod(
        "withinit",
        "print('MAIN', open('/shared/init.txt').read())",
        volumes=[{"name": "shared", "emptyDir": {}}],
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
    )
    manifest["spec"]["initContainers"] = [
        {
            "name": "init",
            "image": "datajuicer/placeholder:latest",
            "command": ["sh", "-c", "echo -n prepared > /shared/init.txt"],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
        }
    ]
    core.create_namespaced_pod(namespace, manifest)
    done = wait_phase(core, namespace, "withinit", ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert "MAIN prepared" in k8s_cluster.node.logs(namespace, "withinit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_delete_sends_sigterm_within_the_grace_period(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    code = textwrap.dedent(
        """
        import signal, sys, time
        def stop(*_):
            print("got SIGTERM, checkpointing", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("ready", flush=True)
        while True:
            time.sleep(0.2)
        """
    )
    core.create_namespaced_pod(namespace, python_pod("graceful", code, restart="Always"))
    node = k8s_cluster.node
    wait_for(
        lambda: "ready" in node.logs(namespace, "graceful"),
        60,
        "graceful ready",
        ignore=(KeyError,),
    )
    pid = node.pod_pid(namespace, "graceful")
    assert pid is not None
    core.delete_namespaced_pod("graceful", namespace, grace_period_seconds=30)
    wait_gone(core, namespace, "graceful", timeout=20)
    assert "got SIGTERM, checkpointing" in node.logs(namespace, "graceful")
    assert not _alive(pid)


def test_delete_kills_a_process_that_ignores_sigterm(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    code = textwrap.dedent(
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stubborn", flush=True)
        while True:
            time.sleep(0.2)
        """
    )
    core.create_namespaced_pod(namespace, python_pod("stubborn", code))
    node = k8s_cluster.node
    wait_for(
        lambda: "stubborn" in node.logs(namespace, "stubborn"),
        60,
        "stubborn ready",
        ignore=(KeyError,),
    )
    pid = node.pod_pid(namespace, "stubborn")
    assert pid is not None
    core.delete_namespaced_pod("stubborn", namespace, grace_period_seconds=2)
    wait_gone(core, namespace, "stubborn", timeout=30)
    wait_for(lambda: not _alive(pid), 10, f"pid {pid} gone")


def test_missing_config_map_holds_the_container_until_it_exists(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    env = [{"name": "LATE", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "v"}}}]
    core.create_namespaced_pod(
        namespace, python_pod("waits", "import os; print('LATE=' + os.environ['LATE'])", env=env)
    )

    def waiting_reason() -> str | None:
        state = container_status(read_pod(core, namespace, "waits"))["state"]
        return (state.get("waiting") or {}).get("reason")

    wait_for(
        lambda: waiting_reason() == "CreateContainerConfigError",
        60,
        "CreateContainerConfigError",
        ignore=(AssertionError,),
    )
    assert read_pod(core, namespace, "waits")["status"]["phase"] == "Pending"
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "late"}, "data": {"v": "1"}})
    done = wait_phase(core, namespace, "waits", ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert "LATE=1" in k8s_cluster.node.logs(namespace, "waits")


def test_kubectl_logs_reads_the_container_output(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    code = "import time\nfor i in range(3): print('line', i, flush=True)\ntime.sleep(600)"
    core.create_namespaced_pod(namespace, python_pod("chatty", code))
    node = k8s_cluster.node
    wait_for(
        lambda: "line 2" in node.logs(namespace, "chatty"), 60, "chatty output", ignore=(KeyError,)
    )
    out = k8s_cluster.kubectl("logs", "-n", namespace, "chatty", "--tail=2").stdout
    assert out == "line 1\nline 2\n"
    via_api = core.read_namespaced_pod_log("chatty", namespace, container="main")
    assert via_api == "line 0\nline 1\nline 2\n"
    missing = k8s_cluster.kubectl("logs", "-n", namespace, "chatty", "-c", "nope", check=False)
    assert missing.returncode != 0


def test_kubectl_logs_follow_ends_with_the_container(
    k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    code = "import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.3)"
    core.create_namespaced_pod(namespace, python_pod("ticker", code))
    wait_phase(core, namespace, "ticker", ("Running", "Succeeded"))
    out = k8s_cluster.kubectl("logs", "-n", namespace, "-f", "ticker", timeout=60).stdout
    assert out == "tick 0\ntick 1\ntick 2\ntick 3\n"
