"""Helpers of the operator's Kubernetes tests: the CRD, the operator as a process, job manifests.

The operator runs as `dj-operator run --namespace NS` (a real process against the real control
plane) under the chart's own RBAC for NS (tests/k8s/operator_identity.py); the runner pods run
on the process node.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from dj_runner import contract
from tests.harness.cluster import Cluster
from tests.harness.ports import free_port
from tests.harness.waiting import wait_for
from tests.k8s.operator_identity import operator_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "datajuicer.io_datajuicerjobs.yaml"
EXAMPLE = ROOT / "examples" / "job.yaml"
DEMO_DATA = ROOT / "examples" / "data" / "demo.jsonl"
TEST_OPS = ROOT / "tests" / "runner" / "support"
OPERATOR_BIN = Path(sys.executable).parent / "dj-operator"
RUNNER_BIN = Path(sys.executable).parent / "dj-runner"
Obj = dict[str, Any]
# The RBAC authorizer's refusal (`User "..." cannot patch resource "configmaps" in API group ""
# ...`) and the operator's line for an Event it was forbidden to post.
RBAC_DENIAL = re.compile(r'cannot [a-z]+ resource "|not posted: Forbidden')


def install_crd(cluster: Cluster) -> None:
    """Apply the CRD and wait until it is Established. Read with `kubectl get`, retried: on a
    control plane that has just started, `kubectl wait` can fail at once, before discovery
    knows the resource."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))

    def established() -> bool:
        got = cluster.kubectl("get", "crd/datajuicerjobs.datajuicer.io", "-o", "json", check=False)
        if got.returncode != 0:
            return False
        conditions = (json.loads(got.stdout).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    wait_for(established, 180, "the DataJuicerJob CRD to be Established", interval=0.5)


class OperatorProcess:
    """`dj-operator run --namespace NS` as the chart's operator ServiceAccount, bound to the
    Role the chart renders for NS: every start (restarts included) runs under that identity.

    `admin=True` runs it with the cluster's admin kubeconfig instead: only for a test that
    needs what the chart does not grant, saying why where it asks (no test does today)."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log: Path,
        env: Mapping[str, str] | None = None,
        metrics: bool = False,
        admin: bool = False,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log = log
        self.env = dict(env or {})
        assert "KUBECONFIG" not in self.env, "the identity is OperatorProcess's (admin=...)"
        self.admin = admin
        self.kubeconfig: Path | None = None
        self.port = 0
        self.metrics_port = free_port() if metrics else 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, tries: int = 3) -> OperatorProcess:
        """Start it; a liveness port taken between choosing and binding it is chosen again."""
        for _ in range(tries - 1):
            try:
                return self._start(wait)
            except AssertionError:
                if "address already in use" not in self.tail():
                    raise
        return self._start(wait)

    def _start(self, wait: bool) -> OperatorProcess:
        self.port = free_port()
        if self.kubeconfig is None:
            self.kubeconfig = (
                self.cluster.kubeconfig
                if self.admin
                else operator_kubeconfig(self.cluster, self.namespace)
            )
        env = {
            **os.environ,
            "DJ_RUNNER_OP_MODULES": "dj_test_ops",
            "PYTHONPATH": os.pathsep.join([str(TEST_OPS), os.environ.get("PYTHONPATH", "")]),
            **self.env,
            "KUBECONFIG": str(self.kubeconfig),
        }
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                str(OPERATOR_BIN),
                "run",
                "--namespace",
                self.namespace,
                "--liveness-port",
                str(self.port),
                *(["--metrics-port", str(self.metrics_port)] if self.metrics_port else []),
            ],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        if wait:
            wait_for(self.healthy, 60, f"dj-operator liveness on port {self.port}\n{self.tail()}")
        return self

    def healthy(self) -> bool:
        import urllib.request

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"dj-operator exited with {self.proc.returncode}:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        """The operator's Prometheus exposition (started with `metrics=True`)."""
        import urllib.request

        assert self.metrics_port, "started without metrics"
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rbac_denials(self) -> list[str]:
        """The lines of its log (every start's) that show a request refused by RBAC: the
        authorizer's message (in a logged exception or a refused create), or an Event whose post
        was forbidden (logged with the reason only). A quota or Pod Security refusal, also a
        403, is not one of them."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if RBAC_DENIAL.search(line)]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM; the operator must exit cleanly within `timeout`, and RBAC must have
        refused it nothing (the chart grants every verb it uses)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise AssertionError(f"dj-operator ignored SIGTERM:\n{self.tail()}") from None
        assert self.rbac_denials() == [], "the chart's RBAC refused the operator a request"
        return self.proc.returncode


@contextmanager
def running_operator(
    cluster: Cluster, namespace: str, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, namespace, log, env).start()
    try:
        yield op
    finally:
        if op.proc is not None and op.proc.poll() is None:
            op.stop()


# The process node gives each pod a TMPDIR under a short directory, and the runner's embedded
# Ray adds its own private directory under TMPDIR: together they leave Ray's Unix socket paths
# (`.../session_<date>_<pid>/sockets/plasma_store`) a few bytes over the 107 allowed. In a real
# pod TMPDIR is /tmp (an emptyDir). The tests give the runner pods (and the local reference
# runs) a shorter TMPDIR of their own, removed at exit: outside /tmp, which the runner pod
# mounts (the node would map the variable into that mount's long directory).
SHORT_TMP = Path(tempfile.mkdtemp(prefix="djt", dir="/var/tmp"))
atexit.register(shutil.rmtree, SHORT_TMP, True)


def short_tmp(job: Obj) -> Obj:
    env = job["spec"].setdefault("runner", {}).setdefault("env", [])
    env.append({"name": "TMPDIR", "value": str(SHORT_TMP)})
    return job


def example_job() -> Obj:
    """examples/job.yaml, with a TMPDIR short enough for Ray's sockets on the process node."""
    return short_tmp(yaml.safe_load(EXAMPLE.read_text()))


#: A runner command that starts and stays Running without Ray or Data-Juicer: the operator's
#: appended `run <recipe> --work-dir ...` become the shell's unused arguments.
SLEEPING_RUNNER = ["sh", "-c", "exec sleep 86400", "runner"]


def minimal_job(name: str, command: list[str] = SLEEPING_RUNNER) -> Obj:
    """A one-op job on its own small templated claim whose runner runs `command`."""
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": name},
        "spec": {
            "recipe": {
                "project_name": name,
                "dataset_path": "input/data.jsonl",
                "export_path": "output/result.jsonl",
                "text_keys": "text",
                "process": [{"whitespace_normalization_mapper": {}}],
            },
            "storage": {
                "volumeClaimTemplate": {
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "10Mi"}},
                    }
                }
            },
            "runner": {"command": list(command)},
        },
    }


def prometheus_sum(text: str, name: str) -> float:
    """The sum of every sample of `name` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def apply(
    cluster: Cluster, namespace: str, *objs: Obj, check: bool = True
) -> subprocess.CompletedProcess[str]:
    text = yaml.safe_dump_all(list(objs), sort_keys=False)
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=check)


def data_config_map(name: str, files: Mapping[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": dict(files),
    }


def numbered_rows(count: int, marker: str = "", at: Iterable[int] = ()) -> str:
    """``count`` JSONL records whose text passes the example's filters; the records at the
    indices ``at`` also carry ``marker`` (for the test ops that fail or wait on it)."""
    marked = set(at)
    texts = (f"row number {i} with enough text to pass" for i in range(count))
    return "".join(
        json.dumps({"text": f"{t} {marker}" if i in marked else t}) + "\n"
        for i, t in enumerate(texts)
    )


def get_json(cluster: Cluster, namespace: str, *what: str) -> Obj:
    return json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


def job_obj(cluster: Cluster, namespace: str, name: str) -> Obj:
    return get_json(cluster, namespace, "djjob", name)


def condition(job: Obj, ctype: str) -> Obj:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return cond
    return {}


def wait_condition(
    cluster: Cluster, namespace: str, name: str, ctype: str, timeout: float = 240
) -> Obj:
    def check() -> Obj | None:
        job = job_obj(cluster, namespace, name)
        return job if condition(job, ctype).get("status") == "True" else None

    return wait_for(check, timeout, f"condition {ctype} of djjob {namespace}/{name}", interval=0.5)


def wait_phase(
    cluster: Cluster, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 240
) -> Obj:
    def check() -> Obj | None:
        job = job_obj(cluster, namespace, name)
        return job if (job.get("status") or {}).get("phase") in phases else None

    return wait_for(check, timeout, f"djjob {namespace}/{name} in phase {phases}", interval=0.5)


def runner_pods(cluster: Cluster, namespace: str, job: str) -> list[Obj]:
    # The job's Ray pods carry its label too (its NetworkPolicy selects them): only the runner's.
    selector = f"datajuicer.io/job={job},app.kubernetes.io/component=runner"
    out = get_json(cluster, namespace, "pods", "-l", selector)
    return sorted(out["items"], key=lambda p: p["metadata"]["name"])


def events(cluster: Cluster, namespace: str, name: str) -> list[Obj]:
    out = get_json(
        cluster,
        namespace,
        "events",
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=DataJuicerJob",
    )
    return out["items"]


def with_test_ops(job: Obj) -> Obj:
    """Runner pods that load the test ops (as a user's custom ops are loaded), and the project
    from where this test process loads it (its PYTHONPATH, as the operator process gets it)."""
    env = job["spec"].setdefault("runner", {}).setdefault("env", [])
    path = [str(TEST_OPS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env += [
        {"name": "DJ_RUNNER_OP_MODULES", "value": "dj_test_ops"},
        {"name": "PYTHONPATH", "value": os.pathsep.join(path)},
    ]
    return job


def local_reference(tmp: Path, recipe: Obj, data: Mapping[str, str]) -> bytes:
    """What `dj-runner run` gives locally for the same recipe and data (the output's bytes)."""
    tmp.mkdir(parents=True, exist_ok=True)
    for rel, text in data.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {
        **os.environ,
        "TMPDIR": str(SHORT_TMP),
        "DJ_RUNNER_OP_MODULES": "dj_test_ops",
        "PYTHONPATH": str(TEST_OPS),
    }
    subprocess.run(
        [str(RUNNER_BIN), "run", "recipe.yaml", "--work-dir", "work", "--job-id", "ref"],
        cwd=tmp,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return (tmp / recipe["export_path"]).read_bytes()


# -- fixtures (imported by the test modules) -------------------------------------------------

import pytest  # noqa: E402

_crd_installed: set[str] = set()


@contextmanager
def own_cluster(workdir: Path, crd: bool = True, **options: Any) -> Iterator[Cluster]:
    """A cluster of a test's own (`Cluster` options: `nodes`, `kuberay`, ...), with the CRD;
    stopped after, when no pod process may be left on any of its nodes."""
    cluster = Cluster(workdir, **options).start()
    try:
        if crd:
            ensure_crd(cluster)
        yield cluster
    finally:
        cluster.stop()
    for node in cluster.nodes:
        assert node.leftover_processes() == [], f"pod processes left on {node.name}"


def ensure_crd(cluster: Cluster) -> None:
    if str(cluster.kubeconfig) not in _crd_installed:
        install_crd(cluster)
        _crd_installed.add(str(cluster.kubeconfig))


@pytest.fixture
def crd(k8s_cluster: Cluster) -> None:
    """The DataJuicerJob CRD installed (no operator)."""
    ensure_crd(k8s_cluster)


@pytest.fixture
def operator(k8s_cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The CRD installed and `dj-operator run --namespace <namespace>` running; stopped (by
    SIGTERM, which it must honour) after the test."""
    ensure_crd(k8s_cluster)
    op = OperatorProcess(k8s_cluster, namespace, tmp_path / "operator.log").start()
    yield op
    if op.proc is not None and op.proc.poll() is None:
        assert op.stop() == 0, op.tail()


def demo_data(cluster: Cluster, namespace: str) -> None:
    """The ConfigMap the example stages its input from (as the README says)."""
    cluster.kubectl("create", "configmap", "demo-data", "-n", namespace, f"--from-file={DEMO_DATA}")


def runner_writes_status() -> bool:
    """Whether the runner writes status.json (the contract's progress record) yet."""
    import importlib.util

    return importlib.util.find_spec("dj_runner.observe.status_file") is not None
