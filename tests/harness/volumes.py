"""Pod volumes as local directories.

- emptyDir: `<pod dir>/volumes/<volume>`, created empty.
- configMap, secret, downwardAPI, projected: files materialised into `<pod dir>/volumes/<volume>`
  once, when the pod starts (later changes to the sources are not propagated).
- projected serviceAccountToken: a token from the TokenRequest API, bound to the pod.
- persistentVolumeClaim: the directory of the PersistentVolume the claim is bound to (its
  `hostPath.path` or `local.path`); the process node provisions `<root>/pvc/<ns>/<claim>`.
- hostPath: the path itself.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from tests.harness.podenv import field_value
from tests.harness.rest import ApiError, Rest

Obj = dict[str, Any]
DEFAULT_TOKEN_SECONDS = 3607


class VolumeNotReady(Exception):
    """A volume cannot be set up yet (the kubelet keeps the pod in ContainerCreating)."""


def _write_file(directory: Path, rel: str, data: bytes, mode: int) -> None:
    target = directory / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(target)


def _source_bytes(obj: Obj, kind: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if kind == "secrets":
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value)
        for key, value in (obj.get("stringData") or {}).items():
            out[key] = value.encode()
        return out
    for key, value in (obj.get("data") or {}).items():
        out[key] = value.encode()
    for key, value in (obj.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value)
    return out


def service_account_token(
    rest: Rest, pod: Obj, audience: str | None = None, seconds: int = DEFAULT_TOKEN_SECONDS
) -> str:
    """A token of the pod's ServiceAccount from the TokenRequest API, bound to the pod."""
    meta = pod["metadata"]
    sa = pod["spec"].get("serviceAccountName") or "default"
    spec: Obj = {
        "expirationSeconds": seconds,
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "uid": meta["uid"],
        },
    }
    if audience:
        spec["audiences"] = [audience]
    path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token"
    try:
        answer = rest.post(
            path, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        )
    except ApiError as exc:
        raise VolumeNotReady(f"token for serviceaccount {sa}: {exc}") from exc
    return str(answer["status"]["token"])


class VolumeBuilder:
    """Materialises the volumes of one pod under `pod_dir/volumes`."""

    def __init__(self, rest: Rest, pod: Obj, pod_dir: Path) -> None:
        self.rest = rest
        self.pod = pod
        self.namespace = pod["metadata"]["namespace"]
        self.base = pod_dir / "volumes"

    def build(self) -> dict[str, Path]:
        """Volume name -> local directory (or file, for a hostPath file)."""
        result: dict[str, Path] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            result[volume["name"]] = self._one(volume)
        return result

    def _get(self, kind: str, name: str) -> Obj | None:
        return self.rest.get_or_none(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")

    def _one(self, volume: Obj) -> Path:
        name = volume["name"]
        target = self.base / name
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            return target
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                path.mkdir(parents=True, exist_ok=True)
            return path
        if "persistentVolumeClaim" in volume:
            return self._claim(volume["persistentVolumeClaim"]["claimName"])
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            self._keyed(target, "configmaps", volume["configMap"], 0o644)
        elif "secret" in volume:
            src = dict(volume["secret"])
            src["name"] = src.get("secretName")
            self._keyed(target, "secrets", src, 0o644)
        elif "downwardAPI" in volume:
            self._downward(
                target,
                volume["downwardAPI"].get("items") or [],
                volume["downwardAPI"].get("defaultMode", 0o644),
            )
        elif "projected" in volume:
            self._projected(target, volume["projected"])
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeNotReady(f"volume {name}: unsupported volume type {kinds}")
        return target

    def _keyed(self, target: Path, kind: str, src: Obj, default_mode: int) -> None:
        obj = self._get(kind, src["name"])
        label = "configmap" if kind == "configmaps" else "secret"
        if obj is None:
            if src.get("optional"):
                return
            raise VolumeNotReady(f'{label} "{src["name"]}" not found')
        data = _source_bytes(obj, kind)
        mode = src.get("defaultMode", default_mode)
        items = src.get("items")
        if not items:
            items = [{"key": key, "path": key} for key in data]
        for item in items:
            if item["key"] not in data:
                if src.get("optional"):
                    continue
                raise VolumeNotReady(f"{label} {src['name']}: no key {item['key']}")
            _write_file(target, item["path"], data[item["key"]], item.get("mode", mode))

    def _downward(self, target: Path, items: list[Obj], mode: int) -> None:
        for item in items:
            if "fieldRef" not in item:
                continue
            value = field_value(self.pod, item["fieldRef"]["fieldPath"])
            _write_file(target, item["path"], value.encode(), item.get("mode", mode))

    def _projected(self, target: Path, projected: Obj) -> None:
        mode = projected.get("defaultMode", 0o644)
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                spec = source["serviceAccountToken"]
                token = service_account_token(
                    self.rest,
                    self.pod,
                    spec.get("audience"),
                    int(spec.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)),
                )
                _write_file(target, spec["path"], token.encode(), 0o600)
            elif "configMap" in source:
                self._keyed(
                    target, "configmaps", {**source["configMap"], "defaultMode": mode}, mode
                )
            elif "secret" in source:
                self._keyed(target, "secrets", {**source["secret"], "defaultMode": mode}, mode)
            elif "downwardAPI" in source:
                self._downward(target, source["downwardAPI"].get("items") or [], mode)

    def _claim(self, claim: str) -> Path:
        pvc = self._get("persistentvolumeclaims", claim)
        if pvc is None:
            raise VolumeNotReady(f'persistentvolumeclaim "{claim}" not found')
        if (pvc.get("status") or {}).get("phase") != "Bound":
            raise VolumeNotReady(f'persistentvolumeclaim "{claim}" is not bound')
        pv = self.rest.get_or_none(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
        if pv is None:
            raise VolumeNotReady(f"persistentvolume of claim {claim} not found")
        spec = pv["spec"]
        local = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not local:
            raise VolumeNotReady(f"persistentvolume {pv['metadata']['name']} has no local path")
        path = Path(local)
        path.mkdir(parents=True, exist_ok=True)
        return path


def container_mounts(container: Obj, volumes: dict[str, Path]) -> dict[str, Path]:
    """mountPath -> local path for one container (subPath resolved, created if missing)."""
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        local = volumes[mount["name"]]
        sub = mount.get("subPath")
        if sub:
            local = local / sub
            if not local.exists():
                local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = Path(os.path.normpath(local))
    return mounts
