"""Realistic DataJuicerJob bodies, as the operator's watch delivers them, for metrics tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dj_runner import contract


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
    estimated_completion: float | None = None,
    timeline: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A djjob with the status the operator and the runner's progress reporter write."""
    body: dict[str, Any] = {
        "apiVersion": contract.API_VERSION,
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
        # One record per runner pod, as the operator derives them from the observed pods.
        "attempts": [
            {
                "index": i + 1,
                "podName": f"{name}-runner-{i + 1}",
                "startTime": rfc3339(
                    (run_started or started or created) if i == attempts - 1 else created
                ),
            }
            for i in range(attempts)
        ],
        "restarts": attempts - 1,
    }
    if started is not None:
        status["startTime"] = rfc3339(started)
    if completed is not None:
        status["completionTime"] = rfc3339(completed)
    if timeline:  # status.timeline: the startup milestones the operator recorded
        status["timeline"] = {k: rfc3339(v) for k, v in timeline.items()}
    if failure_reason is not None:
        status["failure"] = {"reason": failure_reason, "component": "runner", "message": "boom"}
    if started is not None:
        # status.progress as the runner's progress reporter patches it (from status.json).
        status["progress"] = {
            "state": "running" if phase == "Running" else phase.lower(),
            "runId": "r1",
            "podName": f"{name}-runner-{attempts}",
            "partitionsTotal": total,
            "partitionsCompleted": done,
            "partitionsFailed": failed,
            "partitionsRunning": running,
            "completion": f"{done}/{total}",
            "percent": 100 * done // total if total else 0,
            "samplesIn": samples[0],
            "samplesOut": samples[1],
            "samplesRejected": samples[2],
            "currentOp": "text_length_filter",
            "opIndex": 1,
            "lastCheckpointTime": rfc3339(last_checkpoint) if last_checkpoint else None,
            "estimatedCompletionTime": (
                rfc3339(estimated_completion) if estimated_completion else None
            ),
            "updateTime": rfc3339(updated or started),
            "resumedPartitions": resumed_done,
            "resumedCheckpoints": None,
            "error": None,
        }
    body["status"] = status
    return body
