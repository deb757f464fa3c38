"""What a started job keeps until it ends: its Ray mode and where its work dir lives.

Once the first runner attempt (or RayCluster) is created, `status.pinned` records `rayMode`,
`claimName`, `mountPath`, `workDir` and, on object storage, `objectStoreWorkDir`. Later attempts are built from the pinned values, whatever
the spec says since: a mode change would leave the RayCluster behind, a storage change would
start the next attempt on another (empty) work dir and lose every checkpoint. A spec that
differs from a pin is reported (`SpecChangePinned`), never applied; to move a job, delete and
recreate it. No I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dj_operator.api.types import JobSpec
from dj_operator.build import children, names

Obj = dict[str, Any]

#: status.pinned keys, with the spec field each stands for.
FIELDS = {
    "rayMode": "spec.ray.mode",
    "claimName": "spec.storage.claimName",
    "mountPath": "spec.storage.mountPath",
    "workDir": "spec.storage.workDir",
    "objectStoreWorkDir": "spec.storage.objectStore.workDir",
}


def pins_of(job: Obj, spec: JobSpec) -> Obj:
    """The values to pin, as the spec resolves them now (the claim by its name)."""
    return {
        "rayMode": spec.ray.mode,
        "claimName": children.claim_name(job, spec),
        "mountPath": spec.storage.mount_path,
        "workDir": spec.storage.work_dir or "",  # "" for the default (a null is no value)
        "objectStoreWorkDir": (
            spec.storage.object_store.work_dir if spec.storage.object_store is not None else ""
        ),
    }


def apply(job: Obj, spec: JobSpec) -> tuple[JobSpec, list[str]]:
    """The spec with the job's pins in force, and a sentence for each field that differs."""
    pinned = (job.get("status") or {}).get("pinned")
    if not isinstance(pinned, dict):
        return spec, []
    now = pins_of(job, spec)
    changed = [
        f"{FIELDS[key]} changed to {now[key]!r}; the job keeps {pinned.get(key)!r}"
        for key in FIELDS
        if key in pinned and pinned.get(key) != now[key]
    ]
    if not changed:
        return spec, []
    claim = pinned.get("claimName", now["claimName"])
    storage = dataclasses.replace(
        spec.storage,
        claim_name=None if claim == names.claim(job["metadata"]["name"]) else claim,
        mount_path=pinned.get("mountPath", spec.storage.mount_path),
        work_dir=pinned["workDir"] or None if "workDir" in pinned else spec.storage.work_dir,
    )
    store = spec.storage.object_store
    if store is not None and pinned.get("objectStoreWorkDir"):
        store = dataclasses.replace(store, work_dir=pinned["objectStoreWorkDir"])
        storage = dataclasses.replace(storage, object_store=store)
    ray = dataclasses.replace(spec.ray, mode=pinned.get("rayMode", spec.ray.mode))
    return dataclasses.replace(spec, storage=storage, ray=ray), changed


def message(changed: list[str]) -> str:
    return (
        "; ".join(changed) + " until it finishes (its RayCluster and work dir stay where they"
        " are; delete and recreate the job to move it)"
    )
