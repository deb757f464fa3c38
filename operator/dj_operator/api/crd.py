"""The DataJuicerJob CustomResourceDefinition: names, printer columns, the status schema.

The spec's schema is generated from the spec's one description (`dj_operator.api.types`, through
`dj_operator.api.fields`); the status schema, written by the operator and the runner and never
parsed, is written here. `python -m dj_operator.api.crd > crds/datajuicer.io_datajuicerjobs.yaml`
writes the committed file (the chart's `crds/` holds a byte-for-byte copy); tests keep them equal.
Every field has a description; the cross-field rules are CEL (`x-kubernetes-validations`) kept
cheap by bounding every list and string they touch.

`spec.recipe` is a free-form object for now (`x-kubernetes-preserve-unknown-fields`): the operator
validates it with the runner's own recipe rules before any pod exists. `types.RECIPE_SCHEMA` is
the seam where the runner's exported recipe schema will be embedded.
"""

from __future__ import annotations

import sys

import yaml

from dj_operator.api import constants as c
from dj_operator.api import fields
from dj_operator.api.openapi import Schema, boolean, integer, integer64, obj, string, timestamp
from dj_operator.api.types import JobSpec
from dj_runner import contract


def spec_schema() -> Schema:
    """The spec's schema, generated from its description in `dj_operator.api.types`."""
    return fields.schema(JobSpec)


def status_schema() -> Schema:
    condition = obj(
        "A standard condition.",
        {
            "type": string("The condition type.", maxLength=64),
            "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": string("A CamelCase reason.", maxLength=128),
            "message": string("A human-readable message.", maxLength=4096),
            "lastTransitionTime": timestamp("When the status last changed."),
            "observedGeneration": integer64("The generation the condition is about."),
        },
        required=["type", "status"],
    )
    resumed = obj(
        "What an attempt resumed from.",
        {
            "partitionsDone": integer("Partitions restored as done."),
            "checkpoints": integer("Checkpoints restored."),
        },
    )
    attempt = obj(
        "One runner attempt (one pod).",
        {
            "index": integer("The attempt number, from 1."),
            "podName": string("The runner pod."),
            "startTime": timestamp("When the pod was created."),
            "finishTime": timestamp("When the attempt ended."),
            "exitCode": integer("The runner's exit code."),
            "reason": string(
                "Why it ended (Completed, Error, OOMKilled, PodDeleted, Stopped, ...)."
            ),
            "stopReason": string(
                "Set when the operator stopped the pod (Suspended, DeadlineExceeded, Stalled)."
            ),
            "resumedFrom": resumed,
            "reported": obj(
                "What of the runner's report was posted as Events (so none is posted twice).",
                {
                    "partitionsFailed": integer("Failed partitions last reported."),
                    "retries": integer("Partition retries last reported."),
                    "staleSince": timestamp("The stale checkpoint last reported."),
                },
            ),
        },
    )
    progress = obj(
        "The runner's own record of its work (written by the runner, throttled).",
        {
            "state": string("The runner's state: running, succeeded, failed, interrupted, ..."),
            "runId": string("The run that wrote this (changes with each attempt)."),
            "podName": string("The runner pod that wrote this."),
            "resumedPartitions": integer("Partitions this run restored as done from the work dir."),
            "resumedCheckpoints": integer("Checkpoints this run restored."),
            "partitionsTotal": integer("Partitions planned (0 until the plan exists)."),
            "partitionsCompleted": integer("Partitions done."),
            "partitionsFailed": integer("Partitions failed."),
            "partitionsRunning": integer("Partitions in flight."),
            "completion": string("completed/total partitions."),
            "percent": integer("Completed partitions in percent."),
            "samplesIn": integer64("Rows read."),
            "samplesOut": integer64("Rows kept."),
            "samplesRejected": integer64("Malformed records set aside."),
            "currentOp": string("The op running now."),
            "opIndex": integer("Its index in the recipe."),
            "lastCheckpointTime": timestamp("When the last checkpoint was committed."),
            "estimatedCompletionTime": timestamp(
                "When the partition tasks should be done, at this run's pace (while running)."
            ),
            "engineReadyTime": timestamp(
                "When this run's engine was up: Ray started or joined, or skipped."
            ),
            "updateTime": timestamp("When the runner last updated its record."),
            "retries": obj(
                "Partition retries of this run: how many, and the newest.",
                {
                    "count": integer("Retries so far."),
                    "partition": integer("The partition of the newest."),
                    "message": string("Its error.", maxLength=1000),
                },
            ),
            "checkpoint": obj(
                "Where a resume starts: the newest stage with committed checkpoints (what a"
                " restart keeps).",
                {
                    "partitionsCommitted": integer("Partitions with its checkpoint committed."),
                    "partitionsTotal": integer("Partitions planned."),
                    "opsDone": integer("Ops of the recipe applied in those checkpoints."),
                    "op": string("The last op applied in them (absent: none yet)."),
                    "time": timestamp("When the newest of them was committed."),
                    "summary": string("<committed>/<total> partitions after op <n> <name>."),
                },
            ),
            "error": obj(
                "The runner's last error.",
                {
                    "op": string("The failing op."),
                    "partition": integer("The failing partition."),
                    "message": string("The message.", maxLength=4096),
                },
            ),
        },
    )
    failure = obj(
        "Why the job failed (or partially succeeded).",
        {
            "reason": string("The documented reason.", enum=list(c.FAILURE_REASONS)),
            "component": string("Where it failed.", enum=list(c.FAILURE_COMPONENTS)),
            "message": string("What happened and what to fix.", maxLength=8192),
            "exitCode": integer("The runner's exit code, when it exited."),
            "podName": string("The runner pod of the failing attempt."),
            "attempt": integer("The failing attempt."),
            "op": string("The failing op, where known."),
            "partition": integer("The failing partition, where known."),
            "logTail": string("The last lines of the runner's log.", maxLength=8192),
        },
    )
    children = obj(
        "The names of the objects the job owns or uses.",
        {
            "configMap": string("The recipe ConfigMap."),
            "claim": string(
                "The PersistentVolumeClaim mounted as storage (none on object storage)."
            ),
            "serviceAccount": string(
                "The ServiceAccount the runner pod runs as: <job>-runner, or the object store's"
                " webIdentity.serviceAccountName."
            ),
            "rayCluster": string("The RayCluster (kuberay mode)."),
            "rayServiceAccount": string(
                "The Ray pods' ServiceAccount (kuberay mode; no API token): <job>-ray, or the"
                " object store's webIdentity.serviceAccountName."
            ),
            "networkPolicy": string("The NetworkPolicy admitting ingress to the job's pods."),
            "runnerPod": string("The current (or last) runner pod."),
        },
    )
    ray_cluster = obj(
        "kuberay mode: the owned RayCluster as KubeRay reports it (absent while there is none).",
        {
            "name": string("The RayCluster."),
            "state": string(
                "KubeRay's status.state (ready, suspended, failed); pending until KubeRay reports"
                " one. KubeRay keeps ready after the head pod dies: see headReady."
            ),
            "headReady": boolean(
                "Whether the head pod is ready (KubeRay's condition HeadPodReady)."
            ),
            "readyWorkers": integer("Worker pods ready (KubeRay's readyWorkerReplicas)."),
            "desiredWorkers": integer("Worker pods wanted (KubeRay's desiredWorkerReplicas)."),
            "workers": string("readyWorkers/desiredWorkers, as the Workers column shows it."),
        },
    )
    return obj(
        "What the operator observed (everything but progress) and the runner reported (progress).",
        {
            "phase": string("The job's phase.", enum=list(c.PHASES)),
            "observedGeneration": integer64("The generation last reconciled."),
            "conditions": {
                "type": "array",
                "description": "Standard conditions: SpecValid, ClusterReady, Running, Suspended,"
                " Succeeded, Failed, Finished, Blocked (True while something keeps the job's pods"
                " from starting; its reason says what).",
                "maxItems": 16,
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "progress": progress,
            "attempts": {
                "type": "array",
                "description": "The runner attempts, oldest first: the first, the last"
                f" {c.ATTEMPTS_KEPT_LAST} and every retryable failure; the others are counted in"
                " attemptsOmitted.",
                "maxItems": c.ATTEMPTS_MAX_ITEMS,
                "items": attempt,
            },
            "attemptsOmitted": integer(
                "Attempts left out of attempts to keep the status bounded (mostly attempts"
                " stopped by a suspend)."
            ),
            "restarts": integer("Attempts that ended in a retryable failure and were retried."),
            "failure": failure,
            "children": children,
            "rayCluster": ray_cluster,
            "timeline": obj(
                "When the job reached each startup milestone, each recorded once (the apply is"
                " metadata.creationTimestamp, the end completionTime).",
                {
                    "podCreated": timestamp("The first runner pod's creationTimestamp."),
                    "rayReady": timestamp(
                        "kuberay mode: when the RayCluster was first ready; local mode: when the"
                        " runner's engine was first up (progress.engineReadyTime)."
                    ),
                    "firstCheckpoint": timestamp(
                        "The first checkpoint commit the runner reported."
                    ),
                },
            ),
            "workDir": string(
                "The runner's work dir, as the pod sees it (on the claim, or an s3:// URI)."
            ),
            "outputPath": string(
                "The export path, as the pod sees it (on the claim, or an s3:// URI)."
            ),
            "recipeHash": string(
                "sha256:<hex> of the recipe the job's pods read (recipeFrom is read once per run).",
                maxLength=80,
            ),
            "createBackoff": obj(
                "After a create the API server forbade (403: quota, admission): the wait.",
                {
                    "refusals": integer("Forbidden creates in a row."),
                    "retryTime": timestamp("No create is tried before this time."),
                },
            ),
            "suspendedSince": timestamp("When the current suspension began (while suspended)."),
            "suspendedSeconds": integer(
                "Seconds the job spent suspended after it started (not counted by"
                " activeDeadlineSeconds)."
            ),
            "pinned": obj(
                "What the job keeps from its first attempt until it ends, whatever the spec says"
                " since (a change is reported by a SpecChangePinned Event).",
                {
                    "rayMode": string("spec.ray.mode."),
                    "claimName": string("The claim mounted as storage."),
                    "mountPath": string("spec.storage.mountPath."),
                    "workDir": string("spec.storage.workDir, as written (empty: the default)."),
                    "objectStoreWorkDir": string(
                        "spec.storage.objectStore.workDir (empty: the job is on a claim)."
                    ),
                },
            ),
            "startTime": timestamp("When the first runner attempt was created."),
            "completionTime": timestamp("When the job reached a terminal phase."),
        },
    )


def crd() -> Schema:
    """The CustomResourceDefinition as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": c.CRD_NAME},
        "spec": {
            "group": contract.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": contract.KIND,
                "listKind": f"{contract.KIND}List",
                "plural": contract.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": list(c.SHORT_NAMES),
                "categories": ["all", "datajuicer"],
            },
            "versions": [
                {
                    "name": contract.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {
                            "name": "Progress",
                            "type": "string",
                            "jsonPath": ".status.progress.completion",
                        },
                        {
                            "name": "Samples-Out",
                            "type": "integer",
                            "jsonPath": ".status.progress.samplesOut",
                        },
                        {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
                        {
                            "name": "Workers",
                            "type": "string",
                            "description": "kuberay mode: Ray worker pods ready/desired.",
                            "jsonPath": ".status.rayCluster.workers",
                            # `kubectl get -o wide` only: most jobs run in local mode.
                            "priority": 1,
                        },
                        {
                            "name": "Checkpoint",
                            "type": "string",
                            "description": "Where a resume starts (the newest committed stage).",
                            "jsonPath": ".status.progress.checkpoint.summary",
                            "priority": 1,
                        },
                        {
                            "name": "Last-Checkpoint",
                            "type": "date",
                            "description": "The age of the newest committed checkpoint.",
                            "jsonPath": ".status.progress.lastCheckpointTime",
                            "priority": 1,
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A Data-Juicer recipe run on Kubernetes: partitioned,"
                            " checkpointed, resumed after any pod loss.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    # Only a change of the recipe is constrained: metadata,
                                    # finalizer and status updates never trip it.
                                    "rule": "!has(oldSelf.status) || !has(oldSelf.status.startTime)"
                                    " || (has(oldSelf.spec.suspend) && oldSelf.spec.suspend)"
                                    " || (has(self.spec.recipe) == has(oldSelf.spec.recipe)"
                                    " && (!has(self.spec.recipe)"
                                    " || self.spec.recipe == oldSelf.spec.recipe))"
                                    " && (has(self.spec.recipeYAML) == has(oldSelf.spec.recipeYAML)"
                                    " && (!has(self.spec.recipeYAML)"
                                    " || self.spec.recipeYAML == oldSelf.spec.recipeYAML))"
                                    " && (has(self.spec.recipeFrom) == has(oldSelf.spec.recipeFrom)"
                                    " && (!has(self.spec.recipeFrom)"
                                    " || self.spec.recipeFrom == oldSelf.spec.recipeFrom))",
                                    "message": "the recipe cannot change once the job has"
                                    " started; suspend the job first",
                                    "reason": "FieldValueForbidden",
                                    "fieldPath": ".spec.recipe",
                                }
                            ],
                        }
                    },
                }
            ],
        },
    }


HEADER = (
    "# Generated by `python -m dj_operator.api.crd` from operator/dj_operator/api/types.py"
    " (spec) and crd.py: do not edit.\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
