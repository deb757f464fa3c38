"""`make dev-cluster` / `make dev-cluster-down`: a background cluster that leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyarrow.fs import S3FileSystem

from tests.harness import binaries
from tests.harness.devcluster import recorded_pids

pytestmark = [pytest.mark.k8s, pytest.mark.slow]


def _devcluster(directory: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.harness.devcluster", command, "--dir", str(directory)],
        cwd=binaries.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_dev_cluster_up_serves_kubectl_and_down_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    pids: list[int] = []
    kubeconfig = directory / "kubeconfig"
    try:
        up = _devcluster(directory, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"export KUBECONFIG={kubeconfig}" in up.stdout
        assert "kubectl get nodes" in up.stdout
        nodes = subprocess.run(
            [str(binaries.bin_dir() / "kubectl"), "get", "nodes", "-o", "json"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            text=True,
            check=True,
        )
        items = json.loads(nodes.stdout)["items"]
        assert [n["metadata"]["name"] for n in items] == ["process-node"]
        server_pid = int((directory / "devcluster.pid").read_text())
        pids += [pid for pid, _ in recorded_pids(directory)] + [server_pid]
        assert len(pids) >= 5 and all(_alive(p) for p in pids)  # etcd, apiserver, kcm, kuberay
        # the S3 server: its environment file works with a real client, on the dev bucket
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (directory / "s3.env").read_text().splitlines()
        )
        s3 = S3FileSystem(
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=env["AWS_ENDPOINT_URL"].removeprefix("http://"),
            scheme="http",
            region=env["AWS_REGION"],
        )
        with s3.open_output_stream("dev/hello.txt") as sink:
            sink.write(b"hello")
        assert s3.get_file_info("dev/hello.txt").size == 5
        assert f"source {directory / 's3.env'}" in up.stdout
        assert _devcluster(directory, "status").returncode == 0
    finally:
        down = _devcluster(directory, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "dev cluster stopped" in down.stdout
    assert [p for p in pids if _alive(p)] == []
    assert not kubeconfig.exists() and not (directory / "s3.env").exists()
    assert _devcluster(directory, "status").returncode == 1
