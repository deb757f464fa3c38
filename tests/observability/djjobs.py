"""Realistic DataJuicerJob bodies, as the operator's watch delivers them, for metrics tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def djjob(
    name: str,
    namespace: str = "team-a",
    phase: str | None = "Running",
    created: float = 1_700_000_000.0,
    started: float | None = None,
    completed: float | None = None,
    partitions: tuple[int, int, int, int] = (10, 3, 0, 2),
    samples: tuple[int, int, int] = (1234, 1100, 2),
    run_started: float | None = None,
    updated: float | None = None,
    last_checkpoint: float | None = None,
    resumed_done: int | None = None,
    attempts: int = 1,
    failure_reason: str | None = None,
    mode: str = "local",
    uid: str | None = None,
) -> dict[str, Any]:
    """A djjob with a status the operator and the runner's progress reporter would write."""
    body: dict[str, Any] = {
        "apiVersion": "datajuicer.io/v1alpha1",
        "kind": "DataJuicerJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{namespace}-{name}",
            "creationTimestamp": rfc3339(created).replace(".000", ""),
            "generation": 1,
        },
        "spec": {"recipe": {"process": []}, "ray": {"mode": mode}},
    }
    if phase is None:
        return body
    total, done, failed, running = partitions
    conditions = [
        {
            "type": "Running",
            "status": "True" if phase == "Running" else "False",
            "reason": phase,
            "lastTransitionTime": rfc3339(started or created),
        }
    ]
    if phase in ("Succeeded", "PartiallySucceeded", "Failed"):
        conditions.append(
            {
                "type": "Succeeded" if phase != "Failed" else "Failed",
                "status": "True",
                "reason": failure_reason or phase,
                "lastTransitionTime": rfc3339(completed or created),
            }
        )
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": 1,
        "conditions": conditions,
        "attempts": [{"attempt": i + 1, "pod": f"{name}-runner-{i}"} for i in range(attempts)],
        "runnerRestarts": attempts - 1,
    }
    if started is not None:
        status["startTime"] = rfc3339(started)
    if completed is not None:
        status["completionTime"] = rfc3339(completed)
    if failure_reason is not None:
        status["failure"] = {"reason": failure_reason, "component": "runner", "message": "boom"}
    if started is not None:
        status["progress"] = {
            "schema_version": 1,
            "job_id": name,
            "run_id": "r1",
            "state": "running" if phase == "Running" else phase.lower(),
            "started_at": rfc3339(run_started or started),
            "updated_at": rfc3339(updated or started),
            "finished_at": rfc3339(completed) if completed else None,
            "partitions": {"total": total, "done": done, "failed": failed, "running": running},
            "samples": {"in": samples[0], "out": samples[1], "rejected": samples[2]},
            "stage": {"index": 1, "op": "text_length_filter", "global": False},
            "last_checkpoint_at": rfc3339(last_checkpoint) if last_checkpoint else None,
            "resumed": None if resumed_done is None else {"partitions_done": resumed_done},
            "error": None,
        }
    body["status"] = status
    return body
