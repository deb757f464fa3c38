"""Names fixed by the API: group, version, labels, annotations, paths, phases, reasons, exit codes."""

from __future__ import annotations

GROUP = "datajuicer.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DataJuicerJob"
PLURAL = "datajuicerjobs"
SINGULAR = "datajuicerjob"
SHORT_NAMES = ("djjob",)
CRD_NAME = f"{PLURAL}.{GROUP}"

OPERATOR_NAME = "datajuicer-operator"
FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PREFIX = GROUP

# Labels on every child.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_JOB = f"{GROUP}/job"
LABEL_ATTEMPT = f"{GROUP}/attempt"
APP_NAME = "datajuicer"

COMPONENT_RUNNER = "runner"
COMPONENT_RECIPE = "recipe"
COMPONENT_STORAGE = "storage"
COMPONENT_RAY = "ray-cluster"
COMPONENT_RBAC = "runner-rbac"
COMPONENT_RAY_NODE = "ray-node"  # the Ray head and worker pods (and their ServiceAccount)
COMPONENT_NETWORK = "network-policy"

# The runner pod.
RUNNER_CONTAINER = "runner"
RECIPE_VOLUME = "recipe"
RECIPE_DIR = "/etc/datajuicer"
RECIPE_KEY = "recipe.yaml"
RECIPE_PATH = f"{RECIPE_DIR}/{RECIPE_KEY}"
DATA_VOLUME = "data"
TMP_VOLUME = "datajuicer-tmp"
DEFAULT_MOUNT_PATH = "/data"
DEFAULT_RUNNER_IMAGE = "datajuicer/dj-runner:0.1.0"
DEFAULT_RUNNER_COMMAND = ("dj-runner",)
ENV_JOB_NAME = "DJ_JOB_NAME"
ENV_JOB_NAMESPACE = "DJ_JOB_NAMESPACE"
#: kuberay mode: the runner waits for this many alive Ray nodes (the head and every worker).
ENV_RAY_MIN_NODES = "DJ_RUNNER_RAY_MIN_NODES"
#: kuberay mode: how long the runner waits for the cluster (spec.ray.readyTimeoutSeconds).
ENV_RAY_CONNECT_TIMEOUT = "DJ_RUNNER_RAY_CONNECT_TIMEOUT_S"

# Ray (KubeRay's own defaults for the head's ports).
RAY_API_VERSION = "ray.io/v1"
RAY_KIND = "RayCluster"
RAY_PLURAL = "rayclusters"
DEFAULT_RAY_VERSION = "2.60.0"
DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001
DEFAULT_DASHBOARD_PORT = 8265
# KubeRay's default `metrics-export-port` of every Ray node (container port "metrics").
DEFAULT_RAY_METRICS_PORT = 8080
# Where the head's dashboard listens unless spec.ray.headGroup.rayStartParams names a host: the
# pod itself (KubeRay's probes ask localhost), never beyond the job.
DEFAULT_DASHBOARD_HOST = "127.0.0.1"
# Ray picks its worker ports from 10002-19999 by default: the head's service ports must not collide.
RAY_WORKER_PORT_RANGE = (10002, 19999)
# Termination of the Ray pods. On SIGTERM `ray start --block` asks the GCS to drain its node and
# waits until the node's tasks have ended, for up to RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (Ray's
# default: 30 s), then stops its processes. When the operator removes the cluster (the job ended
# or is suspended) the head goes at the same moment, the drain request cannot reach a GCS and each
# worker would wait the whole timeout for nothing. A worker removed alone mid-job (an eviction)
# lets its running partition end for a few seconds; past that the runner retries the partition
# on another worker from the checkpoints. The grace period leaves Ray time to stop its processes
# after the drain before the kubelet kills them.
RAY_DRAIN_TIMEOUT_ENV = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"
RAY_DRAIN_TIMEOUT_SECONDS = 5
RAY_POD_GRACE_SECONDS = 10

MODE_LOCAL = "local"
MODE_KUBERAY = "kuberay"
MODE_EXTERNAL = "external"
RAY_MODES = (MODE_LOCAL, MODE_KUBERAY, MODE_EXTERNAL)

# Phases.
PENDING = "Pending"
STARTING = "Starting"
RUNNING = "Running"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
PARTIALLY_SUCCEEDED = "PartiallySucceeded"
FAILED = "Failed"
PHASES = (PENDING, STARTING, RUNNING, SUSPENDED, SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED)
TERMINAL_PHASES = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED})

# Condition types.
COND_VALID = "SpecValid"
COND_CLUSTER_READY = "ClusterReady"
COND_RUNNING = "Running"
COND_SUSPENDED = "Suspended"
COND_SUCCEEDED = "Succeeded"
COND_FAILED = "Failed"
COND_FINISHED = "Finished"
CONDITION_TYPES = (
    COND_VALID,
    COND_CLUSTER_READY,
    COND_RUNNING,
    COND_SUSPENDED,
    COND_SUCCEEDED,
    COND_FAILED,
    COND_FINISHED,
)

# Failure reasons (status.failure.reason): the documented enum.
R_INVALID_SPEC = "InvalidSpec"
R_INVALID_INPUT = "InvalidInput"
R_RUNNER_FAILED = "RunnerFailed"
R_RESUME_REFUSED = "ResumeRefused"
R_BACKOFF_LIMIT = "BackoffLimitExceeded"
R_DEADLINE = "DeadlineExceeded"
R_STALLED = "Stalled"
R_CLUSTER_NOT_READY = "ClusterNotReady"
R_RECIPE_SOURCE = "RecipeSourceMissing"
FAILURE_REASONS = (
    R_INVALID_SPEC,
    R_INVALID_INPUT,
    R_RUNNER_FAILED,
    R_RESUME_REFUSED,
    R_BACKOFF_LIMIT,
    R_DEADLINE,
    R_STALLED,
    R_CLUSTER_NOT_READY,
    R_RECIPE_SOURCE,
)
FAILURE_COMPONENTS = ("validation", "runner", "ray", "operator")

# Runner exit codes (the runner/operator contract).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_REFUSED = 4
EXIT_LOCKED = 5
EXIT_INTERRUPTED = 6
EXIT_RAY_LOST = 7
EXIT_NO_SPACE = 8  # retryable: space may be freed, and a retry resumes the committed work
EXIT_INTERNAL = 70

FIELD_MANAGER = OPERATOR_NAME
