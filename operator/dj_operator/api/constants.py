"""Names only the operator uses: the CRD's other names, labels, the pods' layout, phases, reasons.

What the runner, the chart or the docs rely on too (the CRD's group, version, kind and plural, the
labels the chart's PodMonitor selects, the runner's environment, its exit codes) is
``dj_runner.contract``'s.
"""

from __future__ import annotations

from dj_runner import contract

SINGULAR = "datajuicerjob"
SHORT_NAMES = ("djjob",)
CRD_NAME = f"{contract.PLURAL}.{contract.GROUP}"

FINALIZER = f"{contract.GROUP}/finalizer"
ANNOTATION_PREFIX = contract.GROUP
#: On each Ray pod: its job's whole name (the job label holds `names.fit` of it, which a long
#: name does not survive), so that a Ray pod left of a deleted RayCluster leads to its job.
ANNOTATION_JOB = f"{ANNOTATION_PREFIX}/job-name"

# Labels on every child (with the contract's managed-by, component and job labels).
LABEL_NAME = "app.kubernetes.io/name"
APP_NAME = "datajuicer"

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
#: spec.startupDeadlineSeconds unless the installation (DJ_STARTUP_DEADLINE_SECONDS) sets one.
DEFAULT_STARTUP_DEADLINE_SECONDS = 600
STARTUP_DEADLINE_ENV = "DJ_STARTUP_DEADLINE_SECONDS"
#: spec.runner.nodeLostTolerationSeconds unless the installation (DJ_NODE_LOST_TOLERATION_SECONDS)
#: sets one: how long the runner pod stays on a node that stopped reporting before Kubernetes
#: evicts it (Kubernetes' own default, 300 s, idles a batch job for five minutes).
DEFAULT_NODE_LOST_TOLERATION_SECONDS = 60
NODE_LOST_TOLERATION_ENV = "DJ_NODE_LOST_TOLERATION_SECONDS"
#: The taints the node lifecycle controller puts on a node that stops reporting.
NODE_LOST_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
#: A runner pod still there this long after its deletion's grace period ended has no kubelet
#: left to end it (its node is lost): the operator force-deletes it and starts the next attempt.
LOST_POD_MARGIN_SECONDS = 10
#: The stopReason of an attempt whose pod the operator force-deleted from a lost node.
STOP_NODE_LOST = "NodeLost"

#: objectStore: the runner's working directory (no data volume; the recipe's paths are URIs or
#: absolute), the pod's writable emptyDir.
NO_VOLUME_WORKING_DIR = "/tmp"

# objectStore.webIdentity with a roleArn: the projected ServiceAccount token the AWS SDK
# exchanges for credentials (AssumeRoleWithWebIdentity), where EKS's webhook would put it.
TOKEN_VOLUME = "datajuicer-aws-token"
TOKEN_DIR = "/var/run/secrets/datajuicer.io/aws"
TOKEN_FILE = "token"
TOKEN_EXPIRATION_SECONDS = 3600
DEFAULT_TOKEN_AUDIENCE = "sts.amazonaws.com"

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
# The Ray head's Ray Client proxier starts a server process for each client (the runner) with
# fork and exec from a process whose gRPC threads are busy; with gRPC's fork handlers on (its
# default) about one start in ten dies at once, and the runner's join then waits 30-40 s for
# Ray to give up on it (docs/benchmarks.md, "kuberay mode"). gRPC's own advice for a process
# that always execs after fork is to turn the handlers off.
GRPC_FORK_SUPPORT_ENV = "GRPC_ENABLE_FORK_SUPPORT"

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
#: True while something keeps the job's pods from starting: a create the API server refused
#: (403: quota, admission), or a runner or Ray pod that cannot start (image pull, config,
#: scheduling); its reason names what (``BLOCKED_REASONS``).
COND_BLOCKED = "Blocked"
CONDITION_TYPES = (
    COND_VALID,
    COND_CLUSTER_READY,
    COND_RUNNING,
    COND_SUSPENDED,
    COND_SUCCEEDED,
    COND_FAILED,
    COND_FINISHED,
    COND_BLOCKED,
)

# Reasons of the Blocked condition (and of the PodBlocked and CreateForbidden Events).
B_CREATE_FORBIDDEN = "CreateForbidden"  # 403 on a create: quota, admission (PSA), RBAC
B_UNSCHEDULABLE = "Unschedulable"  # the pod's PodScheduled condition is False
#: A container waiting for one of these reasons will not start by itself (the kubelet's words).
WAITING_BLOCKED = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
BLOCKED_REASONS = (B_CREATE_FORBIDDEN, B_UNSCHEDULABLE, *WAITING_BLOCKED)

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
R_POD_CREATE_FAILED = "PodCreateFailed"  # 422/400: the API server refused a child as invalid
R_STARTUP_DEADLINE = "StartupDeadlineExceeded"  # a pod did not start within the bound
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
    R_POD_CREATE_FAILED,
    R_STARTUP_DEADLINE,
)
FAILURE_COMPONENTS = ("validation", "runner", "ray", "operator")

FIELD_MANAGER = contract.OPERATOR_NAME

# status.attempts is bounded: the first attempt, the last ATTEMPTS_KEPT_LAST and every retryable
# failure (at most backoffLimit + 1 <= 101) fit in ATTEMPTS_MAX_ITEMS (the CRD's maxItems).
ATTEMPTS_KEPT_LAST = 16
ATTEMPTS_MAX_ITEMS = 128
