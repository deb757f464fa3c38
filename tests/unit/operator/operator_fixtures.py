"""Shared builders of the operator's unit tests: job objects and pod observations as dicts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "job.yaml"
WORK_DIR = "/data/.datajuicer/ns1/demo"


def derived(job: dict, pods: list[dict], now: Any, **observed: Any) -> Any:
    """What `derive` makes of `job` (with a valid spec) and `pods` at `now`; `observed`: the
    other fields of `Observed` (ray_cluster, ray_pods, ...)."""
    from dj_operator.api.types import parse_spec
    from dj_operator.status.decide import Observed
    from dj_operator.status.derive import derive

    observed.setdefault("work_dir", WORK_DIR)
    spec = parse_spec(job["spec"])
    return derive(
        Observed(job=job, spec=spec, spec_error=None, pods=list(pods), now=now, **observed)
    )


def make_job(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict:
    base = yaml.safe_load(EXAMPLE.read_text())
    job = {
        "apiVersion": base["apiVersion"],
        "kind": base["kind"],
        "metadata": {
            "name": "demo",
            "namespace": "ns1",
            "uid": "0123456789abcdef",
            "generation": 1,
            "creationTimestamp": "2026-11-30T05:00:00Z",
        },
        "spec": copy.deepcopy(spec if spec is not None else base["spec"]),
    }
    if status is not None:
        job["status"] = status
    return job


def pod(
    attempt: int,
    phase: str = "Running",
    exit_code: int | None = None,
    deleting: bool = False,
    job_name: str = "demo",
) -> dict:
    """A runner pod of `attempt` as the API returns it."""
    meta: dict[str, Any] = {
        "name": f"{job_name}-runner-{attempt}",
        "namespace": "ns1",
        "labels": {"datajuicer.io/attempt": str(attempt)},
        "creationTimestamp": f"2026-11-30T05:0{attempt}:00Z",
        "ownerReferences": [{"uid": "0123456789abcdef"}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T05:30:00Z"
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [
            {
                "name": "runner",
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "finishedAt": "2026-11-30T05:20:00Z",
                    }
                },
            }
        ]
    return {"metadata": meta, "status": status}
