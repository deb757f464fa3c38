"""The DataJuicerJob CustomResourceDefinition, rendered from this module.

`python -m dj_operator.api.crd > crds/datajuicer.io_datajuicerjobs.yaml` writes the committed
file; a test keeps the two equal. Every field has a description; the cross-field rules are CEL
(`x-kubernetes-validations`) kept cheap by bounding every list and string they touch.

`spec.recipe` is a free-form object for now (`x-kubernetes-preserve-unknown-fields`): the operator
validates it with the runner's own recipe rules before any pod exists. `RECIPE_SCHEMA` is the seam
where the runner's exported recipe schema will be embedded.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from dj_operator.api import constants as c

Schema = dict[str, Any]

# The seam for the runner's recipe schema (a structural schema of the recipe keys and ops).
RECIPE_SCHEMA: Schema = {
    "type": "object",
    "description": (
        "An inline Data-Juicer recipe, written as for `dj-runner run` (dataset_path, export_path,"
        " process, partition and checkpoint keys). Relative dataset_path and export_path resolve"
        " under spec.storage.mountPath. Validated by the operator with the runner's recipe rules"
        " before any pod is created; an invalid recipe fails the job with reason InvalidSpec."
    ),
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "process": {
            "type": "array",
            "description": "The ops, in order: each item maps one op name to its parameters"
            " (or to nothing: `- whitespace_normalization_mapper:`).",
            "maxItems": 256,
            "items": {
                "type": "object",
                # One op per item. Write an op without parameters as `- op_name: {}`:
                # client-side `kubectl apply` drops `- op_name:` (a null) before sending it.
                "minProperties": 1,
                "maxProperties": 1,
                # Nullable, so that an op written without parameters keeps its name (the API
                # server prunes null values it has no nullable schema for).
                "additionalProperties": {
                    "nullable": True,
                    "x-kubernetes-preserve-unknown-fields": True,
                },
            },
        }
    },
}


def _s(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _i(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "format": "int32", "description": description, **extra}


def _b(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def _o(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _free(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "x-kubernetes-preserve-unknown-fields": True,
    }


def _free_list(description: str, max_items: int) -> Schema:
    return {
        "type": "array",
        "description": description,
        "maxItems": max_items,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }


def _str_map(description: str, max_properties: int = 64) -> Schema:
    return {
        "type": "object",
        "description": description,
        "maxProperties": max_properties,
        "additionalProperties": {"type": "string", "maxLength": 1024},
    }


def _time(description: str) -> Schema:
    return _s(description, format="date-time")


_PORT_RULE = {
    "rule": f"self < {c.RAY_WORKER_PORT_RANGE[0]} || self > {c.RAY_WORKER_PORT_RANGE[1]}",
    "message": (
        f"must lie outside {c.RAY_WORKER_PORT_RANGE[0]}-{c.RAY_WORKER_PORT_RANGE[1]},"
        " the range Ray gives its worker processes"
    ),
}


def _port(description: str, default: int) -> Schema:
    return _i(
        description,
        default=default,
        minimum=1,
        maximum=65535,
        **{"x-kubernetes-validations": [_PORT_RULE]},
    )


def _resources(description: str) -> Schema:
    return _free(description + " (a Kubernetes ResourceRequirements: requests, limits).")


def spec_schema() -> Schema:
    storage = _o(
        "Where the data, the output and the runner's work dir live: a claim mounted at mountPath.",
        {
            "claimName": _s(
                "An existing PersistentVolumeClaim to mount (not owned by the job).",
                maxLength=253,
            ),
            "volumeClaimTemplate": _o(
                "A PersistentVolumeClaim the operator creates for the job, named <job>-data.",
                {
                    "metadata": _o(
                        "Labels and annotations for the claim.",
                        {
                            "labels": _str_map("Labels added to the claim."),
                            "annotations": _str_map("Annotations added to the claim."),
                        },
                    ),
                    "spec": _free(
                        "A PersistentVolumeClaimSpec (accessModes, resources, storageClassName)."
                    ),
                },
                required=["spec"],
            ),
            "whenDeleted": _s(
                "With volumeClaimTemplate: Retain keeps the claim (and the output) when the job is"
                " deleted; Delete makes the job its owner so that it is deleted with the job.",
                enum=["Retain", "Delete"],
                default="Retain",
            ),
            "mountPath": _s(
                "Where the claim is mounted in the runner pod; the runner's working directory, so"
                " the recipe's relative paths resolve under it.",
                default=c.DEFAULT_MOUNT_PATH,
                pattern="^/.+",
                maxLength=1024,
            ),
            "workDir": _s(
                "The runner's work dir (checkpoints, plan, event log, status.json), absolute or"
                " relative to mountPath. Default: <mountPath>/.datajuicer/<namespace>/<name>.",
                maxLength=1024,
            ),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.claimName) != has(self.volumeClaimTemplate)",
                    "message": "set exactly one of claimName and volumeClaimTemplate",
                }
            ]
        },
    )
    ports = _o(
        "The head's service ports (KubeRay's defaults). They must lie outside Ray's worker port"
        f" range {c.RAY_WORKER_PORT_RANGE[0]}-{c.RAY_WORKER_PORT_RANGE[1]}.",
        {
            "gcs": _port("The GCS server port.", c.DEFAULT_GCS_PORT),
            "client": _port(
                "The Ray Client server port the runner connects to.", c.DEFAULT_CLIENT_PORT
            ),
            "dashboard": _port("The dashboard port.", c.DEFAULT_DASHBOARD_PORT),
        },
        default={},
    )
    head = _o(
        "The Ray head of the owned RayCluster (kuberay mode).",
        {
            "rayStartParams": _str_map("Extra `ray start` parameters of the head."),
            "resources": _resources("The head container's resources"),
            "ports": ports,
        },
        default={},
    )
    worker = _o(
        "A group of Ray workers (kuberay mode).",
        {
            "name": _s("The group name.", maxLength=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
            "replicas": _i("Workers to start.", default=1, minimum=0, maximum=1000),
            "minReplicas": _i("Fewest workers (autoscaling).", default=0, minimum=0, maximum=1000),
            "maxReplicas": _i("Most workers (autoscaling).", minimum=0, maximum=1000),
            "rayStartParams": _str_map("Extra `ray start` parameters of the workers."),
            "resources": _resources("Each worker container's resources"),
        },
        required=["name"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "(!has(self.minReplicas) || !has(self.replicas)"
                    " || self.minReplicas <= self.replicas) && (!has(self.maxReplicas)"
                    " || !has(self.replicas) || self.replicas <= self.maxReplicas)",
                    "message": "need minReplicas <= replicas <= maxReplicas",
                }
            ]
        },
    )
    ray = _o(
        "Where Ray runs.",
        {
            "mode": _s(
                "local: an embedded Ray inside the runner pod; kuberay: an owned ray.io/v1"
                " RayCluster; external: an existing Ray at address.",
                enum=list(c.RAY_MODES),
                default=c.MODE_LOCAL,
            ),
            "address": _s(
                "external mode only: the Ray address (ray://host:port or host:port).",
                maxLength=512,
            ),
            "rayVersion": _s(
                "kuberay mode: the Ray version of the cluster.",
                default=c.DEFAULT_RAY_VERSION,
                maxLength=32,
            ),
            "image": _s(
                "kuberay mode: the Ray nodes' image (default: the runner image).", maxLength=512
            ),
            "headGroup": head,
            "workerGroups": {
                "type": "array",
                "description": "kuberay mode only: the worker groups.",
                "maxItems": 8,
                "items": worker,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
            "readyTimeoutSeconds": _i(
                "kuberay mode: how long the cluster may take to become ready before the job"
                " fails with reason ClusterNotReady.",
                default=600,
                minimum=1,
                maximum=86400,
            ),
        },
        default={},
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.mode) && self.mode == 'kuberay') || !has(self.workerGroups)",
                    "message": "workerGroups is only valid in kuberay mode",
                },
                {
                    "rule": "(has(self.mode) && self.mode == 'external') == has(self.address)",
                    "message": "address is required in external mode and only valid there",
                },
            ]
        },
    )
    runner = _o(
        "The runner pod: one per attempt, running `dj-runner run` on the mounted work dir.",
        {
            "image": _s(
                "The runner image. Default: the operator's DJ_RUNNER_IMAGE (set by the chart),"
                f" else {c.DEFAULT_RUNNER_IMAGE}.",
                maxLength=512,
            ),
            "imagePullPolicy": _s(
                "The image pull policy.", enum=["Always", "IfNotPresent", "Never"]
            ),
            "command": {
                "type": "array",
                "description": "The runner executable (default [dj-runner]); the operator appends"
                " `run <recipe> --work-dir ... --job-id ...`.",
                "maxItems": 8,
                "minItems": 1,
                "items": {"type": "string", "maxLength": 1024},
            },
            "resources": _resources("The runner container's resources"),
            "env": _free_list("Extra environment variables (Kubernetes EnvVar).", 64),
            "volumes": _free_list(
                "Extra pod volumes (Kubernetes Volume), e.g. a read-only dataset volume.", 16
            ),
            "volumeMounts": _free_list("Extra mounts of the runner container (VolumeMount).", 16),
            "initContainers": _free_list(
                "Containers run before the runner in each attempt (e.g. to stage input data);"
                " each gets the storage mount unless it mounts volume `data` itself.",
                8,
            ),
            "nodeSelector": _str_map("Node labels the runner pod must match."),
            "tolerations": _free_list("Tolerations of the runner pod.", 32),
            "securityContext": _free("The runner container's SecurityContext."),
            "podSecurityContext": _free("The runner pod's PodSecurityContext."),
            "waitForLockSeconds": _i(
                "`--wait-for-lock`: how long a new attempt waits for a previous runner to release"
                " the work dir.",
                default=60,
                minimum=0,
                maximum=3600,
            ),
            "gracePeriodSeconds": _i(
                "`--grace-period`: how long the in-flight checkpoint may take after SIGTERM"
                " (suspend, delete); the pod's termination grace period is 10 s longer.",
                default=30,
                minimum=1,
                maximum=3600,
            ),
            "metricsPort": _i(
                "The port the runner serves Prometheus metrics on while it runs (container"
                " port `metrics`); 0: none. Default: the operator's DJ_RUNNER_METRICS_PORT"
                " (the chart's runner.metricsPort, 9090).",
                minimum=0,
                maximum=65535,
            ),
        },
        default={},
    )
    recipe_from = _o(
        "Take the recipe from a ConfigMap instead of spec.recipe.",
        {
            "configMapKeyRef": _o(
                "The ConfigMap key holding the recipe YAML.",
                {
                    "name": _s("The ConfigMap's name.", maxLength=253),
                    "key": _s("The key.", default=c.RECIPE_KEY, maxLength=253),
                },
                required=["name"],
            )
        },
        required=["configMapKeyRef"],
    )
    return _o(
        "What to run and how.",
        {
            "recipe": RECIPE_SCHEMA,
            "recipeFrom": recipe_from,
            "storage": storage,
            "ray": ray,
            "runner": runner,
            "backoffLimit": _i(
                "Restarts allowed after retryable failures (a crash, a kill, a deleted pod, a"
                " lost Ray); each restart resumes from the checkpoints.",
                default=3,
                minimum=0,
                maximum=100,
            ),
            "activeDeadlineSeconds": _i(
                "Fail the job (DeadlineExceeded) and stop its pods this long after it started.",
                minimum=1,
            ),
            "progressDeadlineSeconds": _i(
                "Fail the job (Stalled) and stop its pods when no checkpoint or partition"
                " completed in this long.",
                minimum=10,
            ),
            "suspend": _b(
                "true: let the in-flight checkpoint commit, remove the runner (and the Ray"
                " cluster), keep the volume; false: resume from the checkpoints.",
                default=False,
            ),
            "ttlSecondsAfterFinished": _i(
                "Delete the job (and what it owns) this long after it finished.", minimum=0
            ),
        },
        required=["storage"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.recipe) != has(self.recipeFrom)",
                    "message": "set exactly one of spec.recipe and spec.recipeFrom",
                }
            ]
        },
    )


def status_schema() -> Schema:
    condition = _o(
        "A standard condition.",
        {
            "type": _s("The condition type.", maxLength=64),
            "status": _s("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _s("A CamelCase reason.", maxLength=128),
            "message": _s("A human-readable message.", maxLength=4096),
            "lastTransitionTime": _time("When the status last changed."),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The generation the condition is about.",
            },
        },
        required=["type", "status"],
    )
    resumed = _o(
        "What an attempt resumed from.",
        {
            "partitionsDone": _i("Partitions restored as done."),
            "checkpoints": _i("Checkpoints restored."),
        },
    )
    attempt = _o(
        "One runner attempt (one pod).",
        {
            "index": _i("The attempt number, from 1."),
            "podName": _s("The runner pod."),
            "startTime": _time("When the pod was created."),
            "finishTime": _time("When the attempt ended."),
            "exitCode": _i("The runner's exit code."),
            "reason": _s("Why it ended (Completed, Error, OOMKilled, PodDeleted, Stopped, ...)."),
            "stopReason": _s(
                "Set when the operator stopped the pod (Suspended, DeadlineExceeded, Stalled)."
            ),
            "resumedFrom": resumed,
        },
    )
    progress = _o(
        "The runner's own record of its work (written by the runner, throttled).",
        {
            "state": _s("The runner's state: running, succeeded, failed, interrupted, ..."),
            "runId": _s("The run that wrote this (changes with each attempt)."),
            "podName": _s("The runner pod that wrote this."),
            "resumedPartitions": _i("Partitions this run restored as done from the work dir."),
            "resumedCheckpoints": _i("Checkpoints this run restored."),
            "partitionsTotal": _i("Partitions planned (0 until the plan exists)."),
            "partitionsCompleted": _i("Partitions done."),
            "partitionsFailed": _i("Partitions failed."),
            "partitionsRunning": _i("Partitions in flight."),
            "completion": _s("completed/total partitions."),
            "percent": _i("Completed partitions in percent."),
            "samplesIn": {"type": "integer", "format": "int64", "description": "Rows read."},
            "samplesOut": {"type": "integer", "format": "int64", "description": "Rows kept."},
            "samplesRejected": {
                "type": "integer",
                "format": "int64",
                "description": "Malformed records set aside.",
            },
            "currentOp": _s("The op running now."),
            "opIndex": _i("Its index in the recipe."),
            "lastCheckpointTime": _time("When the last checkpoint was committed."),
            "estimatedCompletionTime": _time(
                "When the partition tasks should be done, at this run's pace (while running)."
            ),
            "updateTime": _time("When the runner last updated its record."),
            "error": _o(
                "The runner's last error.",
                {
                    "op": _s("The failing op."),
                    "partition": _i("The failing partition."),
                    "message": _s("The message.", maxLength=4096),
                },
            ),
        },
    )
    failure = _o(
        "Why the job failed (or partially succeeded).",
        {
            "reason": _s("The documented reason.", enum=list(c.FAILURE_REASONS)),
            "component": _s("Where it failed.", enum=list(c.FAILURE_COMPONENTS)),
            "message": _s("What happened and what to fix.", maxLength=8192),
            "exitCode": _i("The runner's exit code, when it exited."),
            "podName": _s("The runner pod of the failing attempt."),
            "attempt": _i("The failing attempt."),
            "op": _s("The failing op, where known."),
            "partition": _i("The failing partition, where known."),
            "logTail": _s("The last lines of the runner's log.", maxLength=8192),
        },
    )
    children = _o(
        "The names of the objects the job owns or uses.",
        {
            "configMap": _s("The recipe ConfigMap."),
            "claim": _s("The PersistentVolumeClaim mounted as storage."),
            "serviceAccount": _s("The runner's ServiceAccount."),
            "rayCluster": _s("The RayCluster (kuberay mode)."),
            "rayServiceAccount": _s("The Ray pods' ServiceAccount (kuberay mode; no token)."),
            "networkPolicy": _s("The NetworkPolicy admitting ingress to the job's pods."),
            "runnerPod": _s("The current (or last) runner pod."),
        },
    )
    ray_cluster = _o(
        "kuberay mode: the owned RayCluster as KubeRay reports it (absent while there is none).",
        {
            "name": _s("The RayCluster."),
            "state": _s(
                "KubeRay's status.state (ready, suspended, failed); pending until KubeRay reports"
                " one. KubeRay keeps ready after the head pod dies: see headReady."
            ),
            "headReady": _b("Whether the head pod is ready (KubeRay's condition HeadPodReady)."),
            "readyWorkers": _i("Worker pods ready (KubeRay's readyWorkerReplicas)."),
            "desiredWorkers": _i("Worker pods wanted (KubeRay's desiredWorkerReplicas)."),
            "workers": _s("readyWorkers/desiredWorkers, as the Workers column shows it."),
        },
    )
    return _o(
        "What the operator observed (everything but progress) and the runner reported (progress).",
        {
            "phase": _s("The job's phase.", enum=list(c.PHASES)),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The generation last reconciled.",
            },
            "conditions": {
                "type": "array",
                "description": "Standard conditions: SpecValid, ClusterReady, Running, Suspended,"
                " Succeeded, Failed.",
                "maxItems": 16,
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "progress": progress,
            "attempts": {
                "type": "array",
                "description": "Every runner attempt, oldest first.",
                "maxItems": 128,
                "items": attempt,
            },
            "restarts": _i("Attempts that ended in a retryable failure and were retried."),
            "failure": failure,
            "children": children,
            "rayCluster": ray_cluster,
            "workDir": _s("The runner's work dir, as the pod sees it."),
            "outputPath": _s("The export path, as the pod sees it."),
            "startTime": _time("When the first runner attempt was created."),
            "completionTime": _time("When the job reached a terminal phase."),
        },
    )


def crd() -> Schema:
    """The CustomResourceDefinition as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": c.CRD_NAME},
        "spec": {
            "group": c.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": c.KIND,
                "listKind": f"{c.KIND}List",
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": list(c.SHORT_NAMES),
                "categories": ["all", "datajuicer"],
            },
            "versions": [
                {
                    "name": c.VERSION,
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
    "# Generated by `python -m dj_operator.api.crd` from operator/dj_operator/api/crd.py:"
    " do not edit.\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
