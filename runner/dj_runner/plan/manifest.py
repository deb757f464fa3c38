"""Claiming a work dir for a recipe: the manifest, the result-defining fingerprint, --restart.

The manifest (``job.json``) records which recipe, input and runner made the work dir. The
fingerprint covers the recipe's result-defining parts, the runner's version and each op's
implementation version (an op class's ``version`` attribute, 1 when unset): a resume by a
runner whose op semantics changed is refused, never mixed. ``--restart`` wipes the earlier
results even when the manifest is missing or damaged; a missing or damaged manifest beside
earlier progress is never trusted: that progress is discarded and recomputed.
``resolve_work_dir`` is the one place the work dir of a run is decided.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dj_runner import __version__
from dj_runner.errors import RecipeError, ResumeRefused
from dj_runner.recipe.parse import Recipe
from dj_runner.store.location import is_s3, split_s3
from dj_runner.store.workdir import WorkDir

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def op_versions(recipe: Recipe) -> dict[str, int]:
    return {s.name: int(getattr(type(s.op), "version", 1)) for s in recipe.process}


def result_defining(recipe: Recipe) -> dict[str, Any]:
    """What decides a job's output: the recipe's parts, the runner's and the ops' versions."""
    return {
        **recipe.result_defining(),
        "runner_version": __version__,
        "op_versions": op_versions(recipe),
    }


def fingerprint(recipe: Recipe) -> str:
    blob = json.dumps(result_defining(recipe), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_project_name(name: str) -> str:
    """``project_name`` names the default work dir: one plain path component."""
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise RecipeError(
            "project_name",
            name,
            "a name of letters, digits, '.', '_' and '-' starting with a letter or digit "
            "(it names the default work dir)",
        )
    return name


def default_work_dir(recipe: Recipe) -> Path:
    """``<export dir>/<project>-<hash>-work``: the hash of the absolute export path and the
    project name keeps two recipes that export into one directory apart. An ``s3://`` export
    has no local directory to put it beside: such a recipe must name its work dir."""
    name = check_project_name(recipe.project_name)
    if is_s3(recipe.export_path):
        raise RecipeError(
            "work_dir",
            None,
            "a work dir named in the recipe: with an s3:// export_path it is not derived from "
            "it; set work_dir or --work-dir (a local directory or an s3://bucket/prefix)",
        )
    export = Path(recipe.export_path).expanduser().absolute()
    tag = hashlib.sha256(f"{export}\0{name}".encode()).hexdigest()[:8]
    return export.parent / f"{name}-{tag}-work"


def resolve_work_dir(recipe: Recipe, work_dir: str | Path | None = None) -> str:
    """The run's work dir: ``--work-dir``, else the recipe's ``work_dir``, else the default.

    A local directory or an ``s3://bucket/prefix`` URI, kept as written (a ``Path`` would fold
    ``s3://`` into ``s3:/``); an ``s3://`` one is checked for its form here (``work_dir``).
    """
    chosen = str(work_dir or recipe.work_dir or "")
    if not chosen:
        return str(default_work_dir(recipe))
    if is_s3(chosen):
        _bucket, prefix = split_s3(chosen, "work_dir")
        if not prefix.strip("/"):
            raise RecipeError(
                "work_dir", chosen, "s3://BUCKET/PREFIX with a prefix: a work dir is not a bucket"
            )
        return chosen.rstrip("/")
    return str(Path(chosen).expanduser().absolute())


class DamagedState(Exception):
    """A state file of the work dir cannot be read."""

    def __init__(self, path: str | Path, why: str) -> None:
        self.path = path
        super().__init__(f"{path} is damaged ({why})")


def read_manifest(work: WorkDir) -> dict[str, Any] | None:
    """The manifest, or None when there is none; DamagedState when it is unreadable."""
    where = work.show(WorkDir.MANIFEST)
    try:
        data = work.blobs.read_json(WorkDir.MANIFEST)
    except (OSError, ValueError) as exc:
        raise DamagedState(where, str(exc)) from None
    if data is None:
        return None
    if not isinstance(data, dict) or not {"job_id", "fingerprint"} <= set(data):
        raise DamagedState(where, "not a job manifest")
    return data


def write_manifest(work: WorkDir, data: dict[str, Any]) -> None:
    work.blobs.write_json(WorkDir.MANIFEST, data)


@dataclass(frozen=True)
class Claim:
    job_id: str
    resuming: bool
    recovered: str | None  # why earlier progress was discarded, if it was


def claim_work_dir(
    work: WorkDir, recipe: Recipe, requested_job_id: str | None, restart: bool
) -> Claim:
    """Write or check the manifest; the caller holds the work dir's lock."""
    recovered = None
    try:
        manifest = read_manifest(work)
    except DamagedState as exc:
        manifest = None
        if not restart:
            recovered = f"{exc}; its earlier progress cannot be trusted and is recomputed"
            work.wipe(keep_events=True)
    if restart:
        work.wipe(keep_events=True)
        manifest = None
    elif manifest is None and work.has_progress():
        recovered = recovered or (
            f"{work.show(WorkDir.MANIFEST)} is missing; the earlier progress here cannot be tied to "
            "a recipe and is recomputed"
        )
        work.wipe(keep_events=True)
    fp = fingerprint(recipe)
    if manifest is not None:
        if manifest["fingerprint"] != fp:
            changes = _diff(_manifest_defining(manifest), result_defining(recipe), "")
            what = (
                "recipe"
                if not changes
                or any(not c.startswith(("runner_version", "op_versions")) for c in changes)
                else "runner (its version or an op's implementation version)"
            )
            raise ResumeRefused(
                f"the {what} changed since this work dir was started "
                f"({'; '.join(changes[:6]) or 'fingerprint differs'}); "
                f"resuming would mix results. Use --restart to start the job over, or "
                f"another --work-dir"
            )
        if requested_job_id and requested_job_id != manifest["job_id"]:
            raise ResumeRefused(
                f"work dir {work.uri} belongs to job '{manifest['job_id']}', "
                f"not '{requested_job_id}'; use --restart or another --work-dir"
            )
        return Claim(manifest["job_id"], True, None)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    job_id = requested_job_id or f"{recipe.project_name}-{stamp}"
    write_manifest(
        work,
        {
            "job_id": job_id,
            "fingerprint": fp,
            "result_defining": result_defining(recipe),
            "created_at": time.time(),
            "runner_version": __version__,
        },
    )
    return Claim(job_id, False, recovered)


def _manifest_defining(manifest: dict[str, Any]) -> dict[str, Any]:
    old = dict(manifest.get("result_defining") or {})
    old.setdefault("runner_version", manifest.get("runner_version"))
    old.setdefault("op_versions", None)
    return old


def describe_change(old: Any, new: Any, path: str = "") -> str:
    """The differences between two recipe parts, as ``path: old -> new`` items."""
    return "; ".join(_diff(old, new, path)[:6]) or "fingerprint differs"


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(dict.fromkeys([*old, *new])):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{sub} added ({json.dumps(new[k], default=str)[:80]})")
            elif k not in new:
                out.append(f"{sub} removed")
            else:
                out.extend(_diff(old[k], new[k], sub))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(old):
                out.append(f"{sub} added ({json.dumps(new[i], default=str)[:80]})")
            elif i >= len(new):
                out.append(f"{sub} removed ({json.dumps(old[i], default=str)[:80]})")
            else:
                out.extend(_diff(old[i], new[i], sub))
        return out
    if old != new:
        return [f"{path}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]
    return []
