"""Claims on the process node: each pending PersistentVolumeClaim gets a pre-bound hostPath
PersistentVolume at `<root>/<namespace>/<claim>`, which the controller-manager's PV binder then
binds. The directory outlives the claim: a new claim of the same name gets the same data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tests.harness.rest import ApiError, Obj, Rest


class ClaimProvisioner:
    """Provisions hostPath volumes for the claims of one process node."""

    def __init__(self, rest: Rest, root: Path, node_name: str, log: logging.Logger) -> None:
        self.rest = rest
        self.root = root
        self.node_name = node_name
        self.log = log

    def claim_dir(self, namespace: str, claim: str) -> Path:
        return self.root / namespace / claim

    def on_claim(self, kind: str, obj: Obj) -> None:
        """An informer handler: provision each pending claim."""
        claims = obj["items"] if kind == "SYNC" else [obj]
        if kind == "DELETED":
            return
        for claim in claims:
            try:
                self._provision(claim)
            except Exception:
                self.log.exception("provisioning failed")

    def _provision(self, claim: Obj) -> None:
        meta, spec = claim["metadata"], claim["spec"]
        if spec.get("volumeName") or meta.get("deletionTimestamp"):
            return
        if (claim.get("status") or {}).get("phase") not in (None, "Pending"):
            return
        directory = self.claim_dir(meta["namespace"], meta["name"])
        directory.mkdir(parents=True, exist_ok=True)
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        volume: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": f"pvc-{meta['uid']}",
                "annotations": {"pv.kubernetes.io/provisioned-by": "process-node"},
                "labels": {"node.datajuicer.io/process-node": self.node_name},
            },
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": spec.get("storageClassName") or "",
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self.rest.post("/api/v1/persistentvolumes", volume)
            self.log.info(
                "provisioned %s for claim %s/%s", directory, meta["namespace"], meta["name"]
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
