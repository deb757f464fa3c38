"""The contract between the runner and the operator: every fact both sides rely on, written once.

The runner (``dj_runner``), the operator (``dj_operator``), the Helm chart, the CRD and the docs
all speak of the same things: the runner's exit codes and what each means, the environment the
operator gives a runner pod, the coordinates of the ``DataJuicerJob`` resource the runner
reports its progress to, the labels the chart's PodMonitor selects runner pods by, the name of
the runner's metrics port, the names in a work dir, and the shapes of ``status.json`` and of
``status.progress``. They are written here and nowhere else; ``tests/unit/test_contract.py``
checks that the chart, the CRD and the docs' tables agree with this module.

This module is a leaf: it imports only the standard library, so that any part of either side
(a reader of the work dir, the operator's status derivation) may import it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final, Literal, TypedDict

# --------------------------------------------------------------------------- exit codes


class ExitCode(IntEnum):
    """How ``dj-runner`` ends. The operator classifies a finished runner pod by it."""

    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    REFUSED = 4
    LOCKED = 5
    INTERRUPTED = 6
    RAY_UNAVAILABLE = 7
    NO_SPACE = 8
    INTERNAL = 70

    @property
    def meaning(self) -> str:
        """What the code means, as the docs' exit-code tables begin to say it."""
        return EXIT_MEANINGS[self]

    @property
    def retried(self) -> bool:
        """Whether the operator runs the job again (a new attempt resumes the committed work)."""
        return self in RETRIED_EXIT_CODES


#: The meaning of each exit code: each row of the docs' tables begins with it.
EXIT_MEANINGS: Final[dict[ExitCode, str]] = {
    ExitCode.OK: "succeeded",
    ExitCode.FAILED: "failed",
    ExitCode.USAGE: "invalid recipe, arguments or input",
    ExitCode.PARTIAL: "partially succeeded",
    ExitCode.REFUSED: "resume refused",
    ExitCode.LOCKED: "the work dir is locked by another live runner",
    ExitCode.INTERRUPTED: "interrupted by SIGTERM/SIGINT after a clean stop; resumable",
    ExitCode.RAY_UNAVAILABLE: "Ray unavailable or lost mid-job",
    ExitCode.NO_SPACE: "no space left",
    ExitCode.INTERNAL: "internal error",
}

#: A runner killed by signal N exits with SIGNAL_EXIT_BASE + N (so does a second SIGTERM/SIGINT).
SIGNAL_EXIT_BASE: Final = 128
SIGNAL_EXIT_LABEL: Final = "128+N"
SIGNAL_EXIT_MEANING: Final = "killed by signal N"

#: The codes after which the operator starts another attempt (up to ``backoffLimit``): the
#: cause may pass (a lock, a signal, Ray, a full volume, a bug hit by chance) and the next
#: attempt resumes from the committed checkpoints. So does any 128+N and any unknown code; every
#: other code of ``ExitCode`` ends the job.
RETRIED_EXIT_CODES: Final = frozenset(
    {
        ExitCode.LOCKED,
        ExitCode.INTERRUPTED,
        ExitCode.RAY_UNAVAILABLE,
        ExitCode.NO_SPACE,
        ExitCode.INTERNAL,
    }
)

# --------------------------------------------------------------------------- the runner pod

#: The job's name and namespace: the runner reports ``status.progress`` to that job.
ENV_JOB_NAME: Final = "DJ_JOB_NAME"
ENV_JOB_NAMESPACE: Final = "DJ_JOB_NAMESPACE"
#: kuberay mode: the runner waits for this many alive Ray nodes (the head and every worker).
ENV_RAY_MIN_NODES: Final = "DJ_RUNNER_RAY_MIN_NODES"
#: kuberay mode: how long the runner waits for them, in seconds (spec.ray.readyTimeoutSeconds).
ENV_RAY_CONNECT_TIMEOUT: Final = "DJ_RUNNER_RAY_CONNECT_TIMEOUT_S"
#: Object storage: the standard AWS variables the runner's S3 client reads. They are the only way
#: a store's address and credentials reach a runner or Ray pod (spec.storage.objectStore).
ENV_AWS_ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"
ENV_AWS_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"
ENV_AWS_ROLE_ARN: Final = "AWS_ROLE_ARN"
ENV_AWS_WEB_IDENTITY_TOKEN_FILE: Final = "AWS_WEB_IDENTITY_TOKEN_FILE"
ENV_AWS_ENDPOINT_URL: Final = "AWS_ENDPOINT_URL"
ENV_AWS_ENDPOINT_URL_STS: Final = "AWS_ENDPOINT_URL_STS"
ENV_AWS_REGION: Final = "AWS_REGION"
#: The scheme of an object-storage URI (dataset_path, export_path, the work dir).
S3_SCHEME: Final = "s3://"

#: The runner container's port that serves ``/metrics`` (the chart's PodMonitor scrapes it).
METRICS_PORT_NAME: Final = "metrics"

#: KubeRay names a RayCluster's head Service ``<cluster><suffix>``; the runner's Ray address.
RAY_HEAD_SERVICE_SUFFIX: Final = "-head-svc"

# --------------------------------------------------------------------------- the custom resource

GROUP: Final = "datajuicer.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DataJuicerJob"
PLURAL: Final = "datajuicerjobs"

# --------------------------------------------------------------------------- labels

#: Labels on the pods the operator creates; the chart's PodMonitor selects runner pods by
#: ``LABEL_COMPONENT: COMPONENT_RUNNER`` and ``LABEL_MANAGED_BY: OPERATOR_NAME``.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_JOB: Final = f"{GROUP}/job"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
OPERATOR_NAME: Final = "datajuicer-operator"
COMPONENT_RUNNER: Final = "runner"

# --------------------------------------------------------------------------- the work dir

#: Names in a work dir (``dj_runner.store.workdir.WorkDir`` turns them into paths).
JOB_FILE: Final = "job.json"  # job id, recipe fingerprint, what decides the output
PLAN_FILE: Final = "plan.json"  # the partition plan, written once
STATUS_FILE: Final = "status.json"  # the current run's live status (the shape below)
RESULT_FILE: Final = "result.json"  # the last run's outcome
CLAIMS_DIR: Final = "claims"  # one claim per run: <epoch>.json, created exclusively (fencing)
LOCK_FILE: Final = ".lock"  # the live runner's lock and who holds it
STOP_FILE_PREFIX: Final = ".stop-"  # + run id: asks that run's partition tasks to stop
EVENTS_DIR: Final = "events"  # the event log's segment files
CHECKPOINTS_DIR: Final = "checkpoints"  # one directory per partition
GLOBAL_DIR: Final = "global"  # one directory per global op: its committed decision
REJECTS_DIR: Final = "rejects"  # one file of malformed input records per partition

# --------------------------------------------------------------------------- status.json

STATUS_SCHEMA_VERSION: Final = 1
RunState = Literal["running", "succeeded", "partially_succeeded", "failed", "interrupted"]
RUN_STATES: Final[tuple[RunState, ...]] = (
    "running",
    "succeeded",
    "partially_succeeded",
    "failed",
    "interrupted",
)


class PartitionCounts(TypedDict):
    total: int
    done: int
    failed: int
    running: int


SampleCounts = TypedDict("SampleCounts", {"in": int, "out": int, "rejected": int})
Stage = TypedDict("Stage", {"index": int, "op": str, "global": bool})


class Resumed(TypedDict):
    partitions_done: int
    checkpoints: int


class Checkpoint(TypedDict):
    """Where a resume starts: the newest stage with committed checkpoints. ``ops_done`` ops of
    the recipe are applied in ``partitions_committed`` of ``partitions_total`` partitions
    (``ops_done`` = the number of ops: their output is final); ``op`` is the last of them."""

    partitions_committed: int
    partitions_total: int
    ops_done: int
    op: str | None
    at: str | None  # when the newest of them was committed (None: before this run)


class Retries(TypedDict):
    """Partition retries of this run: how many, and the newest (its partition and error)."""

    count: int
    partition: int | None
    message: str


class RunError(TypedDict):
    op: str | None
    partition: int | None
    message: str


class Status(TypedDict):
    """``<work_dir>/status.json`` (schema 1). Readers accept unknown keys; no file: not started."""

    schema_version: int
    job_id: str
    run_id: str
    state: RunState
    started_at: str  # RFC 3339, UTC, milliseconds
    engine_ready_at: str | None  # when this run's engine was up: Ray started or joined, or skipped
    updated_at: str
    finished_at: str | None
    runner_version: str
    partitions: PartitionCounts
    samples: SampleCounts
    stage: Stage | None
    last_checkpoint_at: str | None
    estimated_completion_at: str | None
    resumed: Resumed | None
    checkpoint: Checkpoint | None
    retries: Retries | None
    export_path: str | None
    error: RunError | None


# --------------------------------------------------------------------------- status.progress


class ProgressError(TypedDict):
    op: str | None
    partition: int | None
    message: str


class ProgressCheckpoint(TypedDict):
    """``status.progress.checkpoint``: ``Checkpoint`` as the job shows it; ``summary`` is the
    one line of ``kubectl get -o wide`` (``12/40 partitions after op 3/5 clean_links_mapper``)."""

    partitionsCommitted: int
    partitionsTotal: int
    opsDone: int
    op: str | None
    time: str | None
    summary: str


class Progress(TypedDict):
    """The job's ``status.progress``: ``status.json`` as the runner copies it onto its job."""

    state: RunState | None
    runId: str | None
    podName: str | None
    partitionsTotal: int
    partitionsCompleted: int
    partitionsFailed: int
    partitionsRunning: int
    completion: str
    percent: int
    samplesIn: int
    samplesOut: int
    samplesRejected: int
    currentOp: str | None
    opIndex: int | None
    lastCheckpointTime: str | None
    estimatedCompletionTime: str | None
    engineReadyTime: str | None
    updateTime: str | None
    resumedPartitions: int | None
    resumedCheckpoints: int | None
    checkpoint: ProgressCheckpoint | None
    retries: Retries | None
    error: ProgressError | None
