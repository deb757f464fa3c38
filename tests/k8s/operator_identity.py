"""The operator's identity in the Kubernetes tests: the chart's own, never the cluster admin.

For a watched namespace the chart (namespaced mode, installed in that namespace) renders the
operator's ServiceAccount, its Role and their RoleBinding; applied there, they give a kubeconfig
whose user is the ServiceAccount's token. `OperatorProcess` runs `dj-operator` with it, so a verb
the operator uses and the chart does not grant fails a test as it would fail an installation.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.harness.cluster import Cluster
from tests.k8s.chartutil import find, render

RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding"}
RELEASE = "rbac"
# A namespace lives for one test, so its token need only outlast the longest test (the chaos
# test, minutes); hours leave room for a loaded machine and a debugger.
TOKEN_DURATION = "6h"

# (the cluster's admin kubeconfig, namespace) -> the operator's kubeconfig there.
_kubeconfigs: dict[tuple[str, str], Path] = {}


def operator_kubeconfig(cluster: Cluster, namespace: str) -> Path:
    """The chart's operator kubeconfig for `namespace`, made once per cluster and namespace
    (every start of an operator there, restarts included, runs under the same identity)."""
    key = (str(cluster.kubeconfig), namespace)
    if key not in _kubeconfigs:
        directory = cluster.workdir / "operator-identity" / namespace
        directory.mkdir(parents=True, exist_ok=True)
        _kubeconfigs[key] = chart_kubeconfig(cluster, namespace, directory)
    return _kubeconfigs[key]


def chart_kubeconfig(cluster: Cluster, namespace: str, directory: Path) -> Path:
    """A kubeconfig of the chart's operator ServiceAccount (namespaced mode, watching and
    installed in `namespace`): the admin's file with the ServiceAccount's token as its user.
    Checked before it is returned: the API server knows it as that ServiceAccount, which may
    not read Secrets."""
    _, objects = render(
        directory,
        {"watch": {"allNamespaces": False, "namespaces": [namespace]}},
        release=RELEASE,
        namespace=namespace,
    )
    rbac = [o for o in objects if o["kind"] in RBAC_KINDS]
    assert {o["kind"] for o in rbac} == RBAC_KINDS
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(rbac))
    sa = find(objects, "ServiceAccount")[0]["metadata"]["name"]
    token = cluster.kubectl(
        "create", "token", sa, "-n", namespace, f"--duration={TOKEN_DURATION}"
    ).stdout
    config = json.loads(cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token.strip()}
    path = directory / "operator-kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    assert_not_admin(cluster, path, f"system:serviceaccount:{namespace}:{sa}")
    return path


def kubectl_as(cluster: Cluster, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with `kubeconfig` (not the admin's); the caller checks the exit status."""
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def username(cluster: Cluster, kubeconfig: Path) -> str:
    """Who the API server says `kubeconfig`'s user is (a SelfSubjectReview)."""
    result = kubectl_as(cluster, kubeconfig, "auth", "whoami", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["status"]["userInfo"]["username"]


def assert_not_admin(cluster: Cluster, kubeconfig: Path, expected: str) -> None:
    """`kubeconfig` is `expected` (a ServiceAccount) to the API server, and may not list
    Secrets in any namespace (the admin may)."""
    assert username(cluster, kubeconfig) == expected
    secrets = kubectl_as(cluster, kubeconfig, "auth", "can-i", "list", "secrets", "-A")
    assert secrets.stdout.strip() == "no", (secrets.returncode, secrets.stdout, secrets.stderr)
