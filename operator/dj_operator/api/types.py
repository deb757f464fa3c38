"""The typed DataJuicerJob spec: frozen dataclasses, parsed from the object with defaults applied.

The apiserver applies the CRD's defaults too; parsing applies the same ones so that the operator
never depends on which defaults an older CRD had. Kubernetes' own types that the spec passes
through to pods (resources, env, volumes, tolerations, ...) stay plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dj_operator.api import constants as c
from dj_operator.build.security import merge

if TYPE_CHECKING:
    from dj_operator.policy import Policy

Obj = dict[str, Any]


class SpecError(ValueError):
    """A spec field is invalid: names the field, the value and what would be valid."""

    def __init__(
        self, field_path: str, value: object, expected: str, message: str | None = None
    ) -> None:
        self.field_path = field_path
        self.value = value
        self.expected = expected
        super().__init__(message or f"{field_path}: got {value!r}; expected {expected}")


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


BUILTIN_DEFAULTS = OperatorDefaults()


@dataclass(frozen=True)
class ConfigMapKeyRef:
    name: str
    key: str = c.RECIPE_KEY


@dataclass(frozen=True)
class StorageSpec:
    claim_name: str | None = None
    volume_claim_template: Obj | None = None
    when_deleted: str = "Retain"
    mount_path: str = c.DEFAULT_MOUNT_PATH
    work_dir: str | None = None


@dataclass(frozen=True)
class RayPorts:
    gcs: int = c.DEFAULT_GCS_PORT
    client: int = c.DEFAULT_CLIENT_PORT
    dashboard: int = c.DEFAULT_DASHBOARD_PORT


@dataclass(frozen=True)
class HeadGroupSpec:
    ray_start_params: dict[str, str] = field(default_factory=dict)
    resources: Obj = field(default_factory=dict)
    ports: RayPorts = RayPorts()


@dataclass(frozen=True)
class WorkerGroupSpec:
    name: str
    replicas: int = 1
    min_replicas: int = 0
    max_replicas: int = 1
    ray_start_params: dict[str, str] = field(default_factory=dict)
    resources: Obj = field(default_factory=dict)


@dataclass(frozen=True)
class RaySpec:
    mode: str = c.MODE_LOCAL
    address: str | None = None
    ray_version: str = c.DEFAULT_RAY_VERSION
    image: str | None = None
    head_group: HeadGroupSpec = HeadGroupSpec()
    worker_groups: tuple[WorkerGroupSpec, ...] = ()
    ready_timeout_seconds: int = 600


@dataclass(frozen=True)
class RunnerSpec:
    image: str = c.DEFAULT_RUNNER_IMAGE
    image_pull_policy: str | None = None
    command: tuple[str, ...] = c.DEFAULT_RUNNER_COMMAND
    resources: Obj = field(default_factory=dict)
    env: tuple[Obj, ...] = ()
    volumes: tuple[Obj, ...] = ()
    volume_mounts: tuple[Obj, ...] = ()
    init_containers: tuple[Obj, ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Obj, ...] = ()
    security_context: Obj | None = None
    pod_security_context: Obj | None = None
    wait_for_lock_seconds: int = 60
    grace_period_seconds: int = 30
    metrics_port: int = 0  # 0: the runner serves no metrics


@dataclass(frozen=True)
class JobSpec:
    recipe: Obj | None
    recipe_from: ConfigMapKeyRef | None
    storage: StorageSpec
    ray: RaySpec = RaySpec()
    runner: RunnerSpec = RunnerSpec()
    backoff_limit: int = 3
    active_deadline_seconds: int | None = None
    progress_deadline_seconds: int | None = None
    suspend: bool = False
    ttl_seconds_after_finished: int | None = None


# -- parsing ---------------------------------------------------------------------------------


def _obj(raw: Any, path: str) -> Obj:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(path, raw, "an object")
    return raw


def _obj_or_none(value: Obj, key: str) -> Obj | None:
    return _obj(value.get(key), f"spec.runner.{key}") or None


def _list(raw: Any, path: str) -> tuple[Obj, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise SpecError(path, raw, "a list of objects")
    return tuple(raw)


def _int(raw: Any, path: str, default: int | None, minimum: int = 0) -> int | None:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(path, raw, "an integer")
    if raw < minimum:
        raise SpecError(path, raw, f"an integer >= {minimum}")
    return raw


def _str(raw: Any, path: str, default: str | None = None) -> str | None:
    if raw is None:
        return default
    if not isinstance(raw, str) or not raw:
        raise SpecError(path, raw, "a non-empty string")
    return raw


def _str_map(raw: Any, path: str) -> dict[str, str]:
    value = _obj(raw, path)
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise SpecError(f"{path}.{key}", item, "a string")
        out[str(key)] = str(item)
    return out


def _choice(raw: Any, path: str, choices: tuple[str, ...], default: str) -> str:
    value = _str(raw, path, default)
    if value not in choices:
        raise SpecError(path, value, "one of " + ", ".join(choices))
    return value  # type: ignore[return-value]


def _ports(raw: Any) -> RayPorts:
    value = _obj(raw, "spec.ray.headGroup.ports")
    ports = {}
    for key, default in (
        ("gcs", c.DEFAULT_GCS_PORT),
        ("client", c.DEFAULT_CLIENT_PORT),
        ("dashboard", c.DEFAULT_DASHBOARD_PORT),
    ):
        path = f"spec.ray.headGroup.ports.{key}"
        port = _int(value.get(key), path, default, minimum=1)
        assert port is not None
        low, high = c.RAY_WORKER_PORT_RANGE
        if port > 65535 or low <= port <= high:
            raise SpecError(
                path, port, f"a port in 1-65535 outside Ray's worker range {low}-{high}"
            )
        ports[key] = port
    if len(set(ports.values())) != len(ports):
        raise SpecError("spec.ray.headGroup.ports", value, "three different ports")
    return RayPorts(**ports)


def _worker_group(raw: Obj, index: int) -> WorkerGroupSpec:
    path = f"spec.ray.workerGroups[{index}]"
    name = _str(raw.get("name"), f"{path}.name")
    if name is None:
        raise SpecError(f"{path}.name", None, "a group name")
    replicas = _int(raw.get("replicas"), f"{path}.replicas", 1)
    low = _int(raw.get("minReplicas"), f"{path}.minReplicas", 0)
    high = _int(raw.get("maxReplicas"), f"{path}.maxReplicas", max(replicas or 1, 1))
    assert replicas is not None and low is not None and high is not None
    if not low <= replicas <= high:
        raise SpecError(
            f"{path}.replicas", replicas, f"minReplicas ({low}) <= replicas <= maxReplicas ({high})"
        )
    return WorkerGroupSpec(
        name=name,
        replicas=replicas,
        min_replicas=low,
        max_replicas=high,
        ray_start_params=_str_map(raw.get("rayStartParams"), f"{path}.rayStartParams"),
        resources=_obj(raw.get("resources"), f"{path}.resources"),
    )


def parse_ray(raw: Any, defaults: OperatorDefaults = BUILTIN_DEFAULTS) -> RaySpec:
    value = _obj(raw, "spec.ray")
    mode = _choice(value.get("mode"), "spec.ray.mode", c.RAY_MODES, c.MODE_LOCAL)
    address = _str(value.get("address"), "spec.ray.address")
    if mode == c.MODE_EXTERNAL and address is None:
        raise SpecError("spec.ray.address", None, "the address of a Ray cluster in external mode")
    if mode != c.MODE_EXTERNAL and address is not None:
        raise SpecError("spec.ray.address", address, "no address unless mode is external")
    groups_raw = _list(value.get("workerGroups"), "spec.ray.workerGroups")
    if groups_raw and mode != c.MODE_KUBERAY:
        raise SpecError("spec.ray.workerGroups", len(groups_raw), "no worker groups unless kuberay")
    groups = tuple(_worker_group(g, i) for i, g in enumerate(groups_raw))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise SpecError("spec.ray.workerGroups", names, "unique group names")
    head = _obj(value.get("headGroup"), "spec.ray.headGroup")
    ready = _int(value.get("readyTimeoutSeconds"), "spec.ray.readyTimeoutSeconds", 600, 1)
    assert ready is not None
    return RaySpec(
        mode=mode,
        address=address,
        ray_version=_str(value.get("rayVersion"), "spec.ray.rayVersion", c.DEFAULT_RAY_VERSION)
        or c.DEFAULT_RAY_VERSION,
        image=_str(value.get("image"), "spec.ray.image", defaults.ray_image),
        head_group=HeadGroupSpec(
            ray_start_params=_str_map(
                head.get("rayStartParams"), "spec.ray.headGroup.rayStartParams"
            ),
            resources=_obj(head.get("resources"), "spec.ray.headGroup.resources"),
            ports=_ports(head.get("ports")),
        ),
        worker_groups=groups,
        ready_timeout_seconds=ready,
    )


def parse_storage(raw: Any) -> StorageSpec:
    value = _obj(raw, "spec.storage")
    claim = _str(value.get("claimName"), "spec.storage.claimName")
    template = value.get("volumeClaimTemplate")
    if template is not None:
        template = _obj(template, "spec.storage.volumeClaimTemplate")
    if (claim is None) == (template is None):
        raise SpecError("spec.storage", value, "exactly one of claimName and volumeClaimTemplate")
    mount = _str(value.get("mountPath"), "spec.storage.mountPath", c.DEFAULT_MOUNT_PATH)
    assert mount is not None
    if not mount.startswith("/") or mount == "/":
        raise SpecError("spec.storage.mountPath", mount, "an absolute path other than /")
    work_dir = _str(value.get("workDir"), "spec.storage.workDir")
    if work_dir is not None and ".." in work_dir.split("/"):
        raise SpecError("spec.storage.workDir", work_dir, "a path without '..'")
    return StorageSpec(
        claim_name=claim,
        volume_claim_template=template,
        when_deleted=_choice(
            value.get("whenDeleted"), "spec.storage.whenDeleted", ("Retain", "Delete"), "Retain"
        ),
        mount_path=mount.rstrip("/"),
        work_dir=work_dir,
    )


def parse_runner(raw: Any, defaults: OperatorDefaults = BUILTIN_DEFAULTS) -> RunnerSpec:
    value = _obj(raw, "spec.runner")
    command = value.get("command")
    if command is not None and (
        not isinstance(command, list)
        or not command
        or not all(isinstance(x, str) and x for x in command)
    ):
        raise SpecError("spec.runner.command", command, "a non-empty list of strings")
    lock = _int(value.get("waitForLockSeconds"), "spec.runner.waitForLockSeconds", 60)
    grace = _int(value.get("gracePeriodSeconds"), "spec.runner.gracePeriodSeconds", 30, 1)
    metrics_port = _int(
        value.get("metricsPort"), "spec.runner.metricsPort", defaults.runner_metrics_port
    )
    assert lock is not None and grace is not None and metrics_port is not None
    if metrics_port > 65535:
        raise SpecError("spec.runner.metricsPort", metrics_port, "a port in 1-65535, or 0 for none")
    return RunnerSpec(
        image=_str(value.get("image"), "spec.runner.image", defaults.runner_image)
        or defaults.runner_image,
        image_pull_policy=_str(value.get("imagePullPolicy"), "spec.runner.imagePullPolicy"),
        command=tuple(command) if command else c.DEFAULT_RUNNER_COMMAND,
        resources=_obj(value.get("resources"), "spec.runner.resources"),
        env=_list(value.get("env"), "spec.runner.env"),
        volumes=_list(value.get("volumes"), "spec.runner.volumes"),
        volume_mounts=_list(value.get("volumeMounts"), "spec.runner.volumeMounts"),
        init_containers=_list(value.get("initContainers"), "spec.runner.initContainers"),
        node_selector=_str_map(value.get("nodeSelector"), "spec.runner.nodeSelector"),
        tolerations=_list(value.get("tolerations"), "spec.runner.tolerations"),
        security_context=merge(defaults.security_context, _obj_or_none(value, "securityContext"))
        or None,
        pod_security_context=merge(
            defaults.pod_security_context, _obj_or_none(value, "podSecurityContext")
        )
        or None,
        wait_for_lock_seconds=lock,
        grace_period_seconds=grace,
        metrics_port=metrics_port,
    )


def parse_spec(raw: Any, defaults: OperatorDefaults = BUILTIN_DEFAULTS) -> JobSpec:
    """Parse `spec` of a DataJuicerJob, with defaults; raise SpecError naming the first bad field."""
    spec = _obj(raw, "spec")
    recipe = spec.get("recipe")
    recipe_from_raw = spec.get("recipeFrom")
    if (recipe is None) == (recipe_from_raw is None):
        raise SpecError("spec.recipe", recipe, "exactly one of spec.recipe and spec.recipeFrom")
    recipe_from = None
    if recipe is not None:
        recipe = _obj(recipe, "spec.recipe")
    else:
        ref = _obj(
            _obj(recipe_from_raw, "spec.recipeFrom").get("configMapKeyRef"),
            "spec.recipeFrom.configMapKeyRef",
        )
        name = _str(ref.get("name"), "spec.recipeFrom.configMapKeyRef.name")
        if name is None:
            raise SpecError("spec.recipeFrom.configMapKeyRef.name", None, "a ConfigMap name")
        key = _str(ref.get("key"), "spec.recipeFrom.configMapKeyRef.key", c.RECIPE_KEY)
        recipe_from = ConfigMapKeyRef(name=name, key=key or c.RECIPE_KEY)
    backoff = _int(spec.get("backoffLimit"), "spec.backoffLimit", 3)
    assert backoff is not None
    suspend = spec.get("suspend", False)
    if not isinstance(suspend, bool):
        raise SpecError("spec.suspend", suspend, "true or false")
    return JobSpec(
        recipe=recipe,
        recipe_from=recipe_from,
        storage=parse_storage(spec.get("storage")),
        ray=parse_ray(spec.get("ray"), defaults),
        runner=parse_runner(spec.get("runner"), defaults),
        backoff_limit=backoff,
        active_deadline_seconds=_int(
            spec.get("activeDeadlineSeconds"), "spec.activeDeadlineSeconds", None, 1
        ),
        progress_deadline_seconds=_int(
            spec.get("progressDeadlineSeconds"), "spec.progressDeadlineSeconds", None, 1
        ),
        suspend=suspend,
        ttl_seconds_after_finished=_int(
            spec.get("ttlSecondsAfterFinished"), "spec.ttlSecondsAfterFinished", None, 0
        ),
    )
