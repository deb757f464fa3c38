"""The DataJuicerJob spec, described once: typed blocks whose fields carry their schema.

Each block is a frozen dataclass; each field says (through ``spec_field``) what it holds, what
it means, its default and its bounds. ``dj_operator.api.fields`` makes the CRD's spec schema
and the parser from these declarations, so a key, a default or a bound is written here and
nowhere else. The apiserver applies the CRD's defaults too; parsing applies the same ones so
that the operator never depends on which defaults an older CRD had. Kubernetes' own types that
the spec passes through to pods (resources, env, volumes, tolerations, ...) stay plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from dj_operator.api import constants as c
from dj_operator.api import openapi as oa
from dj_operator.api.fields import Block, Obj, Rule, SpecError, parse, spec_field
from dj_operator.build.security import merge
from dj_runner import contract

if TYPE_CHECKING:
    from dj_operator.policy import Policy

__all__ = [
    "BUILTIN_DEFAULTS",
    "ConfigMapKeyRef",
    "CredentialsSecret",
    "HeadGroupSpec",
    "JobSpec",
    "ObjectStoreSpec",
    "OperatorDefaults",
    "RayPorts",
    "RaySpec",
    "RecipeFrom",
    "RunnerSpec",
    "SpecError",
    "StorageSpec",
    "WebIdentity",
    "WorkerGroupSpec",
    "parse_spec",
]


@dataclass(frozen=True)
class OperatorDefaults:
    """Defaults the operator's installation sets for the pods it creates (the chart passes them
    as DJ_RUNNER_IMAGE, DJ_RAY_IMAGE, DJ_RUNNER_POD_SECURITY_CONTEXT, DJ_RUNNER_SECURITY_CONTEXT,
    DJ_RUNNER_METRICS_PORT);
    a job's own spec.runner / spec.ray values win (security contexts merge field by field)."""

    runner_image: str = c.DEFAULT_RUNNER_IMAGE
    ray_image: str | None = None
    pod_security_context: Obj | None = None
    security_context: Obj | None = None
    #: The runner's metrics port (DJ_RUNNER_METRICS_PORT; the chart sets 9090). 0: none.
    runner_metrics_port: int = 0
    #: What a job may ask of its pods (dj_operator.policy; None: the default policy).
    policy: Policy | None = None
    #: spec.startupDeadlineSeconds of a job that sets none (DJ_STARTUP_DEADLINE_SECONDS).
    startup_deadline_seconds: int = c.DEFAULT_STARTUP_DEADLINE_SECONDS
    #: spec.runner.nodeLostTolerationSeconds of a job that sets none.
    node_lost_toleration_seconds: int = c.DEFAULT_NODE_LOST_TOLERATION_SECONDS


BUILTIN_DEFAULTS = OperatorDefaults()

# The seam for the runner's recipe schema (a structural schema of the recipe keys and ops).
RECIPE_SCHEMA: oa.Schema = {
    "type": "object",
    "description": (
        "An inline Data-Juicer recipe, written as for `dj-runner run` (dataset_path, export_path,"
        " process, partition and checkpoint keys). Relative dataset_path and export_path resolve"
        " under spec.storage.mountPath. Validated by the operator with the runner's recipe rules"
        " before any pod is created; an invalid recipe fails the job with reason InvalidSpec."
    ),
    oa.PRESERVE: True,
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
                "additionalProperties": {"nullable": True, oa.PRESERVE: True},
            },
        }
    },
}


def _resources(whose: str) -> str:
    return f"{whose} resources (a Kubernetes ResourceRequirements: requests, limits)."


# -- spec.storage ----------------------------------------------------------------------------

#: An ``s3://bucket[/prefix]`` URI: a bucket name as S3 allows it, then an optional key prefix.
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"
_S3_URI_EXPECTED = (
    "an s3://bucket/prefix URI (a bucket name of 3-63 lowercase letters, digits, '.', '-')"
)
_STORAGE_FORMS = (
    ("claimName", "claim_name"),
    ("volumeClaimTemplate", "volume_claim_template"),
    ("objectStore", "object_store"),
)
_ONE_FORM = "exactly one of claimName, volumeClaimTemplate and objectStore"


@dataclass(frozen=True)
class CredentialsSecret:
    BLOCK: ClassVar[Block] = Block(
        "A Secret of the job's namespace that holds an access key pair; its keys reach the runner"
        " and Ray containers as AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)"
        " through secretKeyRef, never as values. The installation policy must allow the Secret"
        " (DJ_POLICY_ALLOWED_SECRETS)."
    )

    name: str = spec_field(
        "The Secret's name.", required=True, expected="a Secret name", max_length=253
    )
    access_key_id_key: str = spec_field(
        "The Secret's key holding the access key id.",
        default=contract.ENV_AWS_ACCESS_KEY_ID,
        max_length=253,
    )
    secret_access_key_key: str = spec_field(
        "The Secret's key holding the secret access key.",
        default=contract.ENV_AWS_SECRET_ACCESS_KEY,
        max_length=253,
    )
    session_token_key: str | None = spec_field(
        "The Secret's key holding a session token (temporary credentials); unset: none.",
        max_length=253,
    )


#: An S3 or STS endpoint: http(s)://host[:port][/path], no credentials in it.
_HTTP_URL_PATTERN = r"^https?://[^/@\s]+(/[^@\s]*)?$"
_HTTP_URL_EXPECTED = "an http(s)://host[:port] URL without credentials"


@dataclass(frozen=True)
class WebIdentity:
    BLOCK: ClassVar[Block] = Block(
        "Credentials from a ServiceAccount's workload identity (web identity, as an IAM role for"
        " a service account): the runner pod and every Ray pod run as this ServiceAccount. The"
        " installation policy must allow it (DJ_POLICY_ALLOWED_SERVICE_ACCOUNTS)."
    )

    service_account_name: str = spec_field(
        "The ServiceAccount of the job's namespace that carries the identity.",
        required=True,
        expected="a ServiceAccount name",
        max_length=253,
    )
    role_arn: str | None = spec_field(
        "The role to assume. Set: the operator projects a token of the ServiceAccount for"
        " `audience` into each pod and sets AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE."
        " Unset: the platform injects them (EKS's pod identity webhook reads the"
        " ServiceAccount's eks.amazonaws.com/role-arn annotation).",
        max_length=2048,
    )
    audience: str = spec_field(
        "With roleArn: the audience of the projected token.",
        default=c.DEFAULT_TOKEN_AUDIENCE,
        max_length=253,
    )
    sts_endpoint: str | None = spec_field(
        "The STS endpoint that exchanges the token for credentials (AWS_ENDPOINT_URL_STS), for"
        " a store whose STS is not at `endpoint` nor AWS's own; unset: `endpoint` if set, else"
        " AWS STS.",
        pattern=_HTTP_URL_PATTERN,
        expected=_HTTP_URL_EXPECTED,
        max_length=512,
    )


def _check_object_store(values: dict[str, Any], raw: Obj, path: str) -> None:
    if values["credentials_secret"] is not None and values["web_identity"] is not None:
        raise SpecError(
            f"{path}.webIdentity",
            values["web_identity"].service_account_name,
            "at most one of credentialsSecret and webIdentity",
        )


@dataclass(frozen=True)
class ObjectStoreSpec:
    BLOCK: ClassVar[Block] = Block(
        "The work dir in an S3-compatible bucket: no volume is created or mounted, the recipe's"
        " dataset_path and export_path are s3:// URIs (or absolute paths under the job's own"
        " runner.volumeMounts). Endpoint, region and credentials reach the runner and every Ray"
        " pod as the standard AWS environment, and nothing else.",
        rules=(
            Rule(
                "!has(self.credentialsSecret) || !has(self.webIdentity)",
                "set at most one of credentialsSecret and webIdentity",
            ),
        ),
        check=_check_object_store,
    )

    work_dir: str = spec_field(
        "The runner's work dir (checkpoints, plan, event log, status.json, the lock):"
        " s3://bucket/prefix. Give each job its own.",
        required=True,
        pattern=S3_URI_PATTERN,
        expected=_S3_URI_EXPECTED,
        max_length=1024,
    )
    endpoint: str | None = spec_field(
        "The store's S3 endpoint (AWS_ENDPOINT_URL), for stores other than AWS S3.",
        pattern=_HTTP_URL_PATTERN,
        expected=_HTTP_URL_EXPECTED,
        max_length=512,
    )
    region: str | None = spec_field(
        "The store's region (AWS_REGION).",
        pattern="^[A-Za-z0-9-]+$",
        expected="a region name such as us-east-1",
        max_length=64,
    )
    credentials_secret: CredentialsSecret | None = spec_field()
    web_identity: WebIdentity | None = spec_field()


def _check_storage(values: dict[str, Any], raw: Obj, path: str) -> None:
    forms = [key for key, attr in _STORAGE_FORMS if values[attr] is not None]
    if len(forms) != 1:
        raise SpecError(path, forms, _ONE_FORM)
    values["mount_path"] = values["mount_path"].rstrip("/")
    work_dir = values["work_dir"]
    if work_dir is not None and values["object_store"] is not None:
        raise SpecError(
            f"{path}.workDir", work_dir, "no workDir with objectStore: set objectStore.workDir"
        )
    if work_dir is not None and ".." in work_dir.split("/"):
        raise SpecError(f"{path}.workDir", work_dir, "a path without '..'")


@dataclass(frozen=True)
class StorageSpec:
    BLOCK: ClassVar[Block] = Block(
        "Where the data, the output and the runner's work dir live: a claim mounted at"
        " mountPath, or a bucket (objectStore).",
        rules=(
            Rule(
                "[has(self.claimName), has(self.volumeClaimTemplate), has(self.objectStore)]"
                ".filter(x, x).size() == 1",
                f"set {_ONE_FORM}",
            ),
            Rule(
                "!has(self.objectStore) || !has(self.workDir)",
                "workDir is only valid with a claim: set objectStore.workDir",
            ),
        ),
        check=_check_storage,
    )

    claim_name: str | None = spec_field(
        "An existing PersistentVolumeClaim to mount (not owned by the job).", max_length=253
    )
    volume_claim_template: Obj | None = spec_field(
        schema=oa.obj(
            "A PersistentVolumeClaim the operator creates for the job, named <job>-data.",
            {
                "metadata": oa.obj(
                    "Labels and annotations for the claim.",
                    {
                        "labels": oa.string_map("Labels added to the claim."),
                        "annotations": oa.string_map("Annotations added to the claim."),
                    },
                ),
                "spec": oa.free(
                    "A PersistentVolumeClaimSpec (accessModes, resources, storageClassName)."
                ),
            },
            required=["spec"],
        )
    )
    object_store: ObjectStoreSpec | None = spec_field()
    when_deleted: str = spec_field(
        "With volumeClaimTemplate: Retain keeps the claim (and the output) when the job is"
        " deleted; Delete makes the job its owner so that it is deleted with the job.",
        choices=("Retain", "Delete"),
        default="Retain",
    )
    mount_path: str = spec_field(
        "With a claim: where it is mounted in the runner pod; the runner's working directory,"
        " so the recipe's relative paths resolve under it.",
        default=c.DEFAULT_MOUNT_PATH,
        pattern="^/.+",
        expected="an absolute path other than /",
        max_length=1024,
    )
    work_dir: str | None = spec_field(
        "With a claim: the runner's work dir (checkpoints, plan, event log, status.json),"
        " absolute or relative to mountPath. Default: <mountPath>/.datajuicer/<namespace>/<name>.",
        max_length=1024,
    )

    @property
    def mount(self) -> str | None:
        """Where the data volume is mounted in the runner pod; None: no volume (objectStore)."""
        return None if self.object_store is not None else self.mount_path


# -- spec.ray --------------------------------------------------------------------------------

_LOW, _HIGH = c.RAY_WORKER_PORT_RANGE
_PORT_RULE = Rule(
    f"self < {_LOW} || self > {_HIGH}",
    f"must lie outside {_LOW}-{_HIGH}, the range Ray gives its worker processes",
)


def _check_port(port: int, path: str) -> None:
    if _LOW <= port <= _HIGH:
        raise SpecError(path, port, f"a port in 1-65535 outside Ray's worker range {_LOW}-{_HIGH}")


def _port(description: str, default: int) -> Any:
    return spec_field(
        description,
        default=default,
        minimum=1,
        maximum=65535,
        rules=(_PORT_RULE,),
        check=_check_port,
    )


def _check_ports(values: dict[str, Any], raw: Obj, path: str) -> None:
    if len(set(values.values())) != len(values):
        raise SpecError(path, raw, "three different ports")


@dataclass(frozen=True)
class RayPorts:
    BLOCK: ClassVar[Block] = Block(
        "The head's service ports (KubeRay's defaults). They must lie outside Ray's worker port"
        f" range {_LOW}-{_HIGH}.",
        check=_check_ports,
    )

    gcs: int = _port("The GCS server port.", c.DEFAULT_GCS_PORT)
    client: int = _port("The Ray Client server port the runner connects to.", c.DEFAULT_CLIENT_PORT)
    dashboard: int = _port("The dashboard port.", c.DEFAULT_DASHBOARD_PORT)


@dataclass(frozen=True)
class HeadGroupSpec:
    BLOCK: ClassVar[Block] = Block("The Ray head of the owned RayCluster (kuberay mode).")

    ray_start_params: dict[str, str] = spec_field("Extra `ray start` parameters of the head.")
    resources: Obj = spec_field(_resources("The head container's"))
    ports: RayPorts = spec_field(default={})


def _check_worker_group(values: dict[str, Any], raw: Obj, path: str) -> None:
    replicas, low = values["replicas"], values["min_replicas"]
    if values["max_replicas"] is None:
        values["max_replicas"] = max(replicas, 1)
    high = values["max_replicas"]
    if not low <= replicas <= high:
        raise SpecError(
            f"{path}.replicas", replicas, f"minReplicas ({low}) <= replicas <= maxReplicas ({high})"
        )


@dataclass(frozen=True)
class WorkerGroupSpec:
    BLOCK: ClassVar[Block] = Block(
        "A group of Ray workers (kuberay mode).",
        rules=(
            Rule(
                "(!has(self.minReplicas) || !has(self.replicas)"
                " || self.minReplicas <= self.replicas) && (!has(self.maxReplicas)"
                " || !has(self.replicas) || self.replicas <= self.maxReplicas)",
                "need minReplicas <= replicas <= maxReplicas",
            ),
        ),
        check=_check_worker_group,
    )

    name: str = spec_field(
        "The group name.",
        required=True,
        expected="a group name (a DNS label)",
        max_length=63,
        pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    )
    replicas: int = spec_field("Workers to start.", default=1, minimum=0, maximum=1000)
    min_replicas: int = spec_field(
        "Fewest workers (autoscaling).", default=0, minimum=0, maximum=1000
    )
    #: Default: replicas (at least 1).
    max_replicas: int = spec_field("Most workers (autoscaling).", minimum=0, maximum=1000)
    ray_start_params: dict[str, str] = spec_field("Extra `ray start` parameters of the workers.")
    resources: Obj = spec_field(_resources("Each worker container's"))


def _check_ray(values: dict[str, Any], raw: Obj, path: str) -> None:
    mode, address = values["mode"], values["address"]
    if mode == c.MODE_EXTERNAL and address is None:
        raise SpecError(f"{path}.address", None, "the address of a Ray cluster in external mode")
    if mode != c.MODE_EXTERNAL and address is not None:
        raise SpecError(f"{path}.address", address, "no address unless mode is external")
    groups = values["worker_groups"]
    if groups and mode != c.MODE_KUBERAY:
        raise SpecError(f"{path}.workerGroups", len(groups), "no worker groups unless kuberay")
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}.workerGroups", names, "unique group names")


@dataclass(frozen=True)
class RaySpec:
    BLOCK: ClassVar[Block] = Block(
        "Where Ray runs.",
        rules=(
            Rule(
                "(has(self.mode) && self.mode == 'kuberay') || !has(self.workerGroups)",
                "workerGroups is only valid in kuberay mode",
            ),
            Rule(
                "(has(self.mode) && self.mode == 'external') == has(self.address)",
                "address is required in external mode and only valid there",
            ),
        ),
        check=_check_ray,
    )

    mode: str = spec_field(
        "local: an embedded Ray inside the runner pod; kuberay: an owned ray.io/v1"
        " RayCluster; external: an existing Ray at address.",
        choices=c.RAY_MODES,
        default=c.MODE_LOCAL,
    )
    address: str | None = spec_field(
        "external mode only: the Ray address (ray://host:port or host:port).", max_length=512
    )
    ray_version: str = spec_field(
        "kuberay mode: the Ray version of the cluster.",
        default=c.DEFAULT_RAY_VERSION,
        max_length=32,
    )
    image: str | None = spec_field(
        "kuberay mode: the Ray nodes' image (default: the runner image).",
        max_length=512,
        operator_default="ray_image",
    )
    head_group: HeadGroupSpec = spec_field(default={})
    worker_groups: tuple[WorkerGroupSpec, ...] = spec_field(
        "kuberay mode only: the worker groups.", max_items=8, map_keys=("name",)
    )
    ready_timeout_seconds: int = spec_field(
        "kuberay mode: how long the cluster may take to become ready before the job"
        " fails with reason ClusterNotReady.",
        default=600,
        minimum=1,
        maximum=86400,
    )


# -- spec.runner -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerSpec:
    BLOCK: ClassVar[Block] = Block(
        "The runner pod: one per attempt, running `dj-runner run` on the mounted work dir."
    )

    image: str = spec_field(
        "The runner image. Default: the operator's DJ_RUNNER_IMAGE (set by the chart),"
        f" else {c.DEFAULT_RUNNER_IMAGE}.",
        max_length=512,
        operator_default="runner_image",
    )
    image_pull_policy: str | None = spec_field(
        "The image pull policy.", choices=("Always", "IfNotPresent", "Never")
    )
    command: tuple[str, ...] = spec_field(
        "The runner executable (default [dj-runner]); the operator appends"
        " `run <recipe> --work-dir ... --job-id ...`.",
        default=c.DEFAULT_RUNNER_COMMAND,
        crd_default=False,
        min_items=1,
        max_items=8,
        item_max_length=1024,
    )
    resources: Obj = spec_field(_resources("The runner container's"))
    env: tuple[Obj, ...] = spec_field(
        "Extra environment variables (Kubernetes EnvVar).", max_items=64
    )
    volumes: tuple[Obj, ...] = spec_field(
        "Extra pod volumes (Kubernetes Volume), e.g. a read-only dataset volume.", max_items=16
    )
    volume_mounts: tuple[Obj, ...] = spec_field(
        "Extra mounts of the runner container (VolumeMount).", max_items=16
    )
    init_containers: tuple[Obj, ...] = spec_field(
        "Containers run before the runner in each attempt (e.g. to stage input data);"
        " with a claim, each gets the storage mount unless it mounts volume `data` itself"
        " (on object storage: no mount, and not the store's environment).",
        max_items=8,
    )
    node_selector: dict[str, str] = spec_field("Node labels the runner pod must match.")
    tolerations: tuple[Obj, ...] = spec_field("Tolerations of the runner pod.", max_items=32)
    node_lost_toleration_seconds: int = spec_field(
        "How long the runner pod stays on a node that stopped reporting (the taints"
        " node.kubernetes.io/unreachable and not-ready) before Kubernetes evicts it; the operator"
        " then removes the pod, which its lost node can no longer do, and the next attempt"
        " resumes on another node. Tolerations of those taints in runner.tolerations win."
        " Default: the operator's DJ_NODE_LOST_TOLERATION_SECONDS"
        f" ({c.DEFAULT_NODE_LOST_TOLERATION_SECONDS} s unless the installation sets one).",
        minimum=0,
        maximum=86400,
        operator_default="node_lost_toleration_seconds",
    )
    security_context: Obj | None = spec_field(
        "The runner container's SecurityContext.",
        operator_default="security_context",
        combine=merge,
    )
    pod_security_context: Obj | None = spec_field(
        "The runner pod's PodSecurityContext.",
        operator_default="pod_security_context",
        combine=merge,
    )
    wait_for_lock_seconds: int = spec_field(
        "`--wait-for-lock`: how long a new attempt waits for a previous runner to release"
        " the work dir.",
        default=60,
        minimum=0,
        maximum=3600,
    )
    grace_period_seconds: int = spec_field(
        "`--grace-period`: how long the in-flight checkpoint may take after SIGTERM"
        " (suspend, delete); the pod's termination grace period is 10 s longer.",
        default=30,
        minimum=1,
        maximum=3600,
    )
    #: 0: the runner serves no metrics.
    metrics_port: int = spec_field(
        "The port the runner serves Prometheus metrics on while it runs (container"
        " port `metrics`); 0: none. Default: the operator's DJ_RUNNER_METRICS_PORT"
        " (the chart's runner.metricsPort, 9090).",
        minimum=0,
        maximum=65535,
        expected="a port in 1-65535, or 0 for none",
        operator_default="runner_metrics_port",
    )


# -- spec.recipeFrom -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigMapKeyRef:
    BLOCK: ClassVar[Block] = Block("The ConfigMap key holding the recipe YAML.")

    name: str = spec_field(
        "The ConfigMap's name.", required=True, expected="a ConfigMap name", max_length=253
    )
    key: str = spec_field("The key.", default=c.RECIPE_KEY, max_length=253)


@dataclass(frozen=True)
class RecipeFrom:
    BLOCK: ClassVar[Block] = Block("Take the recipe from a ConfigMap instead of spec.recipe.")

    config_map_key_ref: ConfigMapKeyRef = spec_field(required=True)


# -- spec ------------------------------------------------------------------------------------


def _check_spec(values: dict[str, Any], raw: Obj, path: str) -> None:
    given = [v for v in ("recipe", "recipe_yaml", "recipe_from") if values[v] is not None]
    if len(given) != 1:
        raise SpecError(
            f"{path}.recipe",
            values["recipe"],
            "exactly one of spec.recipe, spec.recipeYAML and spec.recipeFrom",
        )


@dataclass(frozen=True)
class JobSpec:
    BLOCK: ClassVar[Block] = Block(
        "What to run and how.",
        rules=(
            Rule(
                "[has(self.recipe), has(self.recipeYAML), has(self.recipeFrom)]"
                ".filter(x, x).size() == 1",
                "set exactly one of spec.recipe, spec.recipeYAML and spec.recipeFrom",
            ),
        ),
        check=_check_spec,
    )

    recipe: Obj | None = spec_field(schema=RECIPE_SCHEMA)
    recipe_yaml: str | None = spec_field(
        "The recipe as YAML text, exactly as Data-Juicer's docs write it (`recipeYAML: |`):"
        " items such as `- whitespace_normalization_mapper:` keep their nulls, which"
        " client-side `kubectl apply` drops from spec.recipe. Validated like spec.recipe.",
        key="recipeYAML",
        max_length=262144,
    )
    recipe_from: RecipeFrom | None = spec_field()
    storage: StorageSpec = spec_field(required=True)
    ray: RaySpec = spec_field(default={})
    runner: RunnerSpec = spec_field(default={})
    backoff_limit: int = spec_field(
        "Restarts allowed after retryable failures (a crash, a kill, a deleted pod, a"
        " lost Ray); each restart resumes from the checkpoints.",
        default=3,
        minimum=0,
        maximum=100,
    )
    active_deadline_seconds: int | None = spec_field(
        "Fail the job (DeadlineExceeded) and stop its pods this long after it started.",
        minimum=1,
    )
    progress_deadline_seconds: int | None = spec_field(
        "Fail the job (Stalled) and stop its pods when no checkpoint or partition"
        " completed in this long.",
        minimum=10,
    )
    startup_deadline_seconds: int = spec_field(
        "Fail the job (StartupDeadlineExceeded) when a runner pod is not running this long"
        " after it was created, or something has kept its pods from starting (Blocked) this"
        " long. Default: the operator's DJ_STARTUP_DEADLINE_SECONDS"
        f" ({c.DEFAULT_STARTUP_DEADLINE_SECONDS} s unless the installation sets one).",
        minimum=10,
        maximum=86400,
        operator_default="startup_deadline_seconds",
    )
    suspend: bool = spec_field(
        "true: let the in-flight checkpoint commit, remove the runner (and the Ray"
        " cluster), keep the volume; false: resume from the checkpoints.",
        default=False,
    )
    ttl_seconds_after_finished: int | None = spec_field(
        "Delete the job (and what it owns) this long after it finished.", minimum=0
    )


def parse_spec(raw: Any, defaults: OperatorDefaults = BUILTIN_DEFAULTS) -> JobSpec:
    """Parse `spec` of a DataJuicerJob, with defaults; raise SpecError naming the first bad field."""
    spec: JobSpec = parse(JobSpec, raw, "spec", defaults)
    return spec
