"""Validation of a job beyond its schema, before any pod exists: the recipe with the runner's own
rules, and the spec's paths, bounds and Ray parameters that the schema cannot express.

`dj_runner.recipe.parse.parse_recipe` checks keys, op names, op parameters and path suffixes on the
mapping alone, without touching the filesystem; its messages name the key and suggest the closest
valid name. Paths are resolved against the storage mount, as the runner pod resolves them; on
object storage (no mount) a path must be an ``s3://`` URI or absolute.
What the installation allows a job to ask of its pods is `dj_operator.policy`'s decision.
"""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath
from typing import Any

import yaml

from dj_operator.api import constants as c
from dj_operator.api.types import JobSpec, SpecError
from dj_operator.build import object_store
from dj_runner import contract
from dj_runner.errors import RecipeError
from dj_runner.recipe.parse import parse_recipe


def load_recipe_text(text: str, source: str) -> dict[str, Any]:
    """Parse a recipe held as YAML text (a ConfigMap key); SpecError when it is not a mapping."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(source, text[:80], f"valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SpecError(source, raw, "a YAML mapping (a Data-Juicer recipe)")
    return raw


def _under(mount: str | None, path: str) -> str:
    """Where the pod sees ``path``: under the mount unless absolute; an ``s3://`` URI as it is."""
    if path.startswith(contract.S3_SCHEME):
        return path
    if mount is not None and not path.startswith("/"):
        path = posixpath.join(mount, path)
    return posixpath.normpath(path)


#: What a recipe path on object storage must be.
_NO_VOLUME_PATH = (
    "an s3:// URI, or an absolute path under one of the job's own runner.volumeMounts"
    " (spec.storage.objectStore mounts no volume that a relative path could resolve under)"
)


def validate_recipe(
    recipe: dict[str, Any],
    mount_path: str | None,
    field: str = "spec.recipe",
    work_dir: str | None = None,
    job_id: str | None = None,
) -> dict[str, str]:
    """Validate `recipe`; return its resolved dataset and export paths as the pod sees them.

    ``mount_path`` is the storage mount (``StorageSpec.mount``); None on object storage, where a
    relative path is refused. ``work_dir`` and ``job_id`` are what the runner pod is given
    (``--work-dir``, ``--job-id``): they fill the recipe's ``{work_dir}`` and ``{job_id}``
    placeholders as the runner will."""
    try:
        parsed = parse_recipe(
            dict(recipe),
            base_dir=PurePosixPath(mount_path or "."),  # type: ignore[arg-type]
            job_id=job_id,
            work_dir=work_dir,
        )
    except RecipeError as exc:
        # The runner's own message (with its "did you mean"), located in the job's spec.
        raise SpecError(
            f"{field}.{exc.key}", exc.value, exc.expected, f"{field}: invalid recipe: {exc}"
        ) from exc
    out = {}
    for key in ("dataset_path", "export_path"):
        raw = str(recipe[key])
        value = str(getattr(parsed, key))
        if mount_path is None:
            if not value.startswith((contract.S3_SCHEME, "/")):
                raise SpecError(f"{field}.{key}", raw, _NO_VOLUME_PATH)
        elif not raw.startswith("/") and ".." in PurePosixPath(raw).parts:
            raise SpecError(f"{field}.{key}", raw, f"a path that stays under {mount_path}")
        out[key] = _under(mount_path, value)
    return out


def work_dir_for(spec: JobSpec, namespace: str, name: str) -> str:
    """The runner's work dir: objectStore.workDir (a URI); else spec.storage.workDir (relative to
    the mount) or the default under the mount."""
    store = spec.storage.object_store
    if store is not None:
        return store.work_dir.rstrip("/")
    mount = spec.storage.mount_path
    if spec.storage.work_dir:
        return _under(mount, spec.storage.work_dir)
    return f"{mount}/.datajuicer/{namespace}/{name}"


#: The longest duration a spec may give, in seconds (the CRD's int32): a longer one overflows the
#: operator's clock arithmetic.
MAX_SECONDS = 2**31 - 1
# The runner pod's own mounts: the storage mount must not hide or sit on them.
_RESERVED_MOUNTS = ("/tmp", c.RECIPE_DIR)
# rayStartParams the operator sets from spec.ray.headGroup.ports, and those KubeRay refuses.
_OWNED_HEAD_PARAMS = {
    "port": "spec.ray.headGroup.ports.gcs",
    "ray-client-server-port": "spec.ray.headGroup.ports.client",
    "dashboard-port": "spec.ray.headGroup.ports.dashboard",
}


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_mount_path(raw: Any) -> None:
    field = "spec.storage.mountPath"
    if not isinstance(raw, str):
        return  # defaulted, or refused by parse_spec
    normal = posixpath.normpath(raw)
    if normal.startswith("//"):
        normal = normal[1:]
    if normal != raw.rstrip("/") or normal == "/" or not raw.startswith("/"):
        raise SpecError(field, raw, "a normalized absolute path other than / (such as /data)")
    for reserved in _RESERVED_MOUNTS:
        if _inside(normal, reserved) or _inside(reserved, normal):
            raise SpecError(
                field, raw, f"a path apart from {reserved}, which the runner pod mounts itself"
            )


def _check_seconds(value: int | None, field: str) -> None:
    if value is not None and value > MAX_SECONDS:
        raise SpecError(field, value, f"at most {MAX_SECONDS} seconds")


def _check_ray_params(spec: JobSpec) -> None:
    ray = spec.ray
    groups = [("spec.ray.headGroup", ray.head_group.ray_start_params)]
    groups += [
        (f"spec.ray.workerGroups[{i}]", g.ray_start_params) for i, g in enumerate(ray.worker_groups)
    ]
    for path, params in groups:
        if "labels" in params:
            raise SpecError(
                f"{path}.rayStartParams.labels",
                params["labels"],
                "no labels in rayStartParams (KubeRay refuses it)",
            )
    for key, instead in _OWNED_HEAD_PARAMS.items():
        if key in ray.head_group.ray_start_params:
            raise SpecError(
                f"spec.ray.headGroup.rayStartParams.{key}",
                ray.head_group.ray_start_params[key],
                f"no {key} here: set {instead}",
            )


def _check_runner_env(spec: JobSpec) -> None:
    """runner.env may not set what spec.storage.objectStore sets (two values, one wins)."""
    owned = object_store.env_names(spec)
    for index, var in enumerate(spec.runner.env):
        if var.get("name") in owned:
            raise SpecError(
                f"spec.runner.env[{index}].name",
                var.get("name"),
                "a variable other than "
                + ", ".join(owned)
                + " (set from spec.storage.objectStore)",
            )


def validate_spec(raw_spec: Any, spec: JobSpec, name: str, namespace: str) -> None:
    """Refuse (SpecError, naming the field) what parse_spec accepts but a pod or the operator
    cannot honour: a mountPath that is not a clean absolute path or that collides with the
    runner's own mounts, a workDir outside the storage (a restart would lose its checkpoints),
    a runner.env variable that objectStore sets, a duration too long to compute with, and Ray
    start parameters the operator owns."""
    storage = (raw_spec or {}).get("storage") if isinstance(raw_spec, dict) else None
    _check_mount_path((storage or {}).get("mountPath") if isinstance(storage, dict) else None)
    _check_runner_env(spec)
    work_dir = work_dir_for(spec, namespace, name)
    if spec.storage.mount is not None and not _inside(work_dir, spec.storage.mount):
        raise SpecError(
            "spec.storage.workDir",
            spec.storage.work_dir,
            f"a directory under the storage mount {spec.storage.mount_path} (the checkpoints"
            " must outlive the pod)",
        )
    _check_seconds(spec.active_deadline_seconds, "spec.activeDeadlineSeconds")
    _check_seconds(spec.progress_deadline_seconds, "spec.progressDeadlineSeconds")
    _check_seconds(spec.ttl_seconds_after_finished, "spec.ttlSecondsAfterFinished")
    _check_seconds(spec.ray.ready_timeout_seconds, "spec.ray.readyTimeoutSeconds")
    _check_ray_params(spec)
