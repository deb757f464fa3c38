"""What parse_spec accepts but a pod, KubeRay or the operator cannot honour (validate_spec), and
child names that stay valid for any job name."""

from __future__ import annotations

import re
from typing import Any

import pytest
from operator_fixtures import make_job

from dj_operator.api import constants as c
from dj_operator.api.types import SpecError, parse_spec
from dj_operator.api.validation import MAX_SECONDS, validate_spec
from dj_operator.build import children, names
from dj_operator.status import times
from dj_operator.status.derive import Observed, derive

Obj = dict[str, Any]
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _validate(job: Obj) -> None:
    spec = parse_spec(job["spec"])
    validate_spec(job["spec"], spec, job["metadata"]["name"], job["metadata"]["namespace"])


def _edit(path: str, value: Any) -> Obj:
    job = make_job()
    node = job["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return job


REFUSED = [
    ("storage.mountPath", "//", "spec.storage.mountPath", "a normalized absolute path"),
    ("storage.mountPath", "/data/../etc", "spec.storage.mountPath", "a normalized absolute"),
    ("storage.mountPath", "/tmp", "spec.storage.mountPath", "apart from /tmp"),
    ("storage.mountPath", "/tmp/data", "spec.storage.mountPath", "apart from /tmp"),
    ("storage.mountPath", "/etc/datajuicer", "spec.storage.mountPath", "apart from /etc/dataj"),
    ("storage.workDir", "/tmp/work", "spec.storage.workDir", "under the storage mount /data"),
    ("storage.workDir", "/elsewhere", "spec.storage.workDir", "under the storage mount /data"),
    ("activeDeadlineSeconds", 10**15, "spec.activeDeadlineSeconds", f"at most {MAX_SECONDS}"),
    ("progressDeadlineSeconds", 2**31, "spec.progressDeadlineSeconds", "at most"),
    ("ttlSecondsAfterFinished", 10**12, "spec.ttlSecondsAfterFinished", "at most"),
    (
        "ray",
        {"mode": "kuberay", "headGroup": {"rayStartParams": {"labels": "a=b"}}},
        "spec.ray.headGroup.rayStartParams.labels",
        "KubeRay refuses it",
    ),
    (
        "ray",
        {"mode": "kuberay", "workerGroups": [{"name": "w", "rayStartParams": {"labels": "x"}}]},
        "spec.ray.workerGroups[0].rayStartParams.labels",
        "KubeRay refuses it",
    ),
    (
        "ray",
        {"mode": "kuberay", "headGroup": {"rayStartParams": {"ray-client-server-port": "1"}}},
        "spec.ray.headGroup.rayStartParams.ray-client-server-port",
        "set spec.ray.headGroup.ports.client",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "expected"), REFUSED, ids=[f"{r[0]}={r[1]}" for r in REFUSED]
)
def test_refused_with_the_field_named(path: str, value: Any, field: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        _validate(_edit(path, value))
    assert info.value.field_path == field
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("storage.mountPath", "/data/"),
        ("storage.mountPath", "/mnt/tmp"),
        ("storage.workDir", "runs/a"),
        ("storage.workDir", "/data/runs/a"),
        ("activeDeadlineSeconds", MAX_SECONDS),
        ("ray", {"mode": "kuberay", "headGroup": {"rayStartParams": {"num-cpus": "0"}}}),
    ],
)
def test_accepted(path: str, value: Any) -> None:
    _validate(_edit(path, value))


def test_a_huge_deadline_fails_the_job_instead_of_every_reconcile() -> None:
    """Before the check, derive() raised OverflowError on every reconcile of such a job."""
    job = _edit("activeDeadlineSeconds", 10**15)
    job["status"] = {"startTime": "2026-11-30T05:00:00Z"}
    spec = parse_spec(job["spec"])
    with pytest.raises(OverflowError):
        derive(Observed(job=job, spec=spec, spec_error=None, pods=[], now=times.now()))
    try:
        validate_spec(job["spec"], spec, "demo", "ns1")
    except SpecError as exc:
        error = exc
    out = derive(Observed(job=job, spec=spec, spec_error=error, pods=[], now=times.now()))
    assert out.phase == c.FAILED
    assert "spec.activeDeadlineSeconds" in out.status["failure"]["message"]


AWKWARD = ["demo", "my.job", "1job", "0", "a.b.c", "9-lives.v2", "x" * 253, "a" * 60 + ".b"]


@pytest.mark.parametrize("job_name", AWKWARD)
def test_ray_cluster_names_are_dns_1035_labels_for_any_job_name(job_name: str) -> None:
    name = names.ray_cluster(job_name)
    assert DNS1035.match(name), name
    assert len(name) <= 47  # room for KubeRay's -head-svc
    assert names.ray_cluster(job_name) == name  # deterministic
    job = make_job()
    job["metadata"]["name"] = job_name
    job["spec"]["ray"] = {"mode": "kuberay"}
    cluster = children.ray_cluster(job, parse_spec(job["spec"]))
    assert cluster["metadata"]["name"] == name


def test_ray_cluster_names_stay_distinct_and_keep_valid_names() -> None:
    made = {names.ray_cluster(job) for job in [*AWKWARD, "my-job", "a-b-c", "job"]}
    assert len(made) == len(AWKWARD) + 3
    assert names.ray_cluster("demo") == "demo-ray"
    # A long valid name keeps the name it had before (no orphaned cluster on upgrade).
    assert names.ray_cluster("r" * 100) == names.fit("r" * 100 + "-ray", 47)
