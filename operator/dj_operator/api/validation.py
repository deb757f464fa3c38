"""Validation of a job's recipe with the runner's own rules, before any pod exists.

`dj_runner.recipe.parse.parse_recipe` checks keys, op names, op parameters and path suffixes on the
mapping alone, without touching the filesystem; its messages name the key and suggest the closest
valid name. Paths are resolved against the storage mount, as the runner pod resolves them.
"""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath
from typing import Any

import yaml

from dj_operator.api.types import JobSpec, SpecError
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


def _under(mount: str, path: str) -> str:
    return posixpath.normpath(path if path.startswith("/") else posixpath.join(mount, path))


def validate_recipe(
    recipe: dict[str, Any], mount_path: str, field: str = "spec.recipe"
) -> dict[str, str]:
    """Validate `recipe`; return its resolved dataset and export paths as the pod sees them."""
    try:
        parsed = parse_recipe(dict(recipe), base_dir=PurePosixPath(mount_path))  # type: ignore[arg-type]
    except RecipeError as exc:
        # The runner's own message (with its "did you mean"), located in the job's spec.
        raise SpecError(
            f"{field}.{exc.key}", exc.value, exc.expected, f"{field}: invalid recipe: {exc}"
        ) from exc
    out = {}
    for key in ("dataset_path", "export_path"):
        raw = str(recipe[key])
        if not raw.startswith("/") and ".." in PurePosixPath(raw).parts:
            raise SpecError(f"{field}.{key}", raw, f"a path that stays under {mount_path}")
        out[key] = _under(mount_path, raw)
    del parsed
    return out


def work_dir_for(spec: JobSpec, namespace: str, name: str) -> str:
    """The runner's work dir: spec.storage.workDir (relative to the mount) or the default."""
    mount = spec.storage.mount_path
    if spec.storage.work_dir:
        return _under(mount, spec.storage.work_dir)
    return f"{mount}/.datajuicer/{namespace}/{name}"
