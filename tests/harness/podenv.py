"""A container's environment and command line, resolved as a kubelet does, with path mapping.

Path mapping: a container sees its volumes at `volumeMounts[].mountPath`; on the process node the
volume is a local directory. Every string of the command, the args and the env values has each
mount path (a whole path component prefix, longest first) replaced with its local directory, and
`KPN_MOUNTS` carries the whole map as JSON. Pods share the host's filesystem, so a path the node
knows as a host directory (`host_paths`: the project checkout, the Python environment, the
node's own directory, pytest's temporary directories) is left as it is even under a mount path:
a runner pod mounts an emptyDir at `/tmp`, and a checkout under `/tmp` is still the checkout.

Service names: every pod shares the host's network, so every Service is the node itself. A
cluster DNS name of a Service (`<svc>.<ns>.svc` or `<svc>.<ns>.svc.cluster.local`) in the
command, the args or the env values is rewritten to `127.0.0.1`; the Service's port must be the
real one. See docs/dev-cluster.md.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
# Reads one object: ("configmaps" | "secrets", namespace, name) -> object or None if absent.
Lookup = Callable[[str, str, str], Obj | None]

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_PATH_CHAR = r"[A-Za-z0-9_.\-/]"
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
# `<svc>.<ns>.svc[.cluster.local]`, not part of a longer host name or path.
_SERVICE_HOST = re.compile(
    rf"(?<![-A-Za-z0-9_.])(?<![^/]/){_DNS_LABEL}\.{_DNS_LABEL}\.svc(?:\.cluster\.local)?"
    r"(?![-A-Za-z0-9_])(?!\.[A-Za-z0-9])"
)
NODE_ADDRESS = "127.0.0.1"


class ConfigError(Exception):
    """The container cannot be configured yet (kubelet reason CreateContainerConfigError)."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand `$(VAR)` references from `env` as Kubernetes does; `$$` is a literal `$`."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(sub, value)


class PathMapper:
    """Maps container paths under mount points to local directories; paths under
    `host_paths` are the host's own and are never mapped."""

    def __init__(self, mounts: Mapping[str, Path], host_paths: Sequence[Path] = ()) -> None:
        cleaned = {p.rstrip("/") or "/": Path(local) for p, local in mounts.items()}
        self.mounts = dict(sorted(cleaned.items(), key=lambda kv: -len(kv[0])))
        self.host_paths = tuple(str(p).rstrip("/") for p in host_paths if str(p).strip("/"))
        rewritable = [p for p in self.mounts if p != "/"]
        self._pattern = (
            re.compile(
                rf"(?<!{_PATH_CHAR})("
                + "|".join(re.escape(p) for p in rewritable)
                + rf")(?=/|(?!{_PATH_CHAR}))"
            )
            if rewritable
            else None
        )

    def rewrite(self, text: str) -> str:
        """Replace every mount path that starts a path in `text` with its local directory."""
        if self._pattern is None:
            return text

        def sub(m: re.Match[str]) -> str:
            if self._host_path_at(text, m.start(), m.group(1)):
                return m.group(0)
            return str(self.mounts[m.group(1)])

        return self._pattern.sub(sub, text)

    def _host_path_at(self, text: str, start: int, mount: str) -> bool:
        """Whether `text` names, at `start`, a host path deeper than `mount` (a whole path)."""
        for host in self.host_paths:
            end = start + len(host)
            if (
                len(host) > len(mount)
                and text.startswith(host, start)
                and (end == len(text) or not re.match(_PATH_CHAR, text[end]) or text[end] == "/")
            ):
                return True
        return False

    def local(self, container_path: str) -> Path | None:
        """The local path of a container path under a mount, or None."""
        if self._host_path_at(container_path, 0, ""):
            return Path(container_path)
        for mount, local in self.mounts.items():
            if container_path == mount or container_path.startswith(mount.rstrip("/") + "/"):
                rest = container_path[len(mount) :].lstrip("/")
                return local / rest if rest else local
        return None

    def as_json(self) -> str:
        return json.dumps({p: str(local) for p, local in self.mounts.items()}, sort_keys=True)


def rewrite_service_hosts(text: str) -> str:
    """Replace each cluster DNS name of a Service in `text` with the node's address."""
    return _SERVICE_HOST.sub(NODE_ADDRESS, text)


def localize(text: str, mapper: PathMapper) -> str:
    """A container's string as the process node runs it: mount paths and Service names mapped."""
    return rewrite_service_hosts(mapper.rewrite(text))


def field_value(pod: Obj, path: str) -> str:
    """The value of a downward-API fieldRef such as `metadata.labels['app']`."""
    meta = pod.get("metadata", {})
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod.get("spec", {}).get("nodeName"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName"),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path == "metadata.labels" or path == "metadata.annotations":
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


def _object_data(obj: Obj, kind: str) -> dict[str, str]:
    """String data of a ConfigMap or Secret (Secret values decoded from base64)."""
    if kind == "secrets":
        return {
            k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in (obj.get("data") or {}).items()
        }
    data = dict(obj.get("data") or {})
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value).decode("utf-8", "replace")
    return data


def _key_ref(ref: Obj, kind: str, namespace: str, lookup: Lookup) -> str | None:
    label = "configmap" if kind == "configmaps" else "secret"
    obj = lookup(kind, namespace, ref["name"])
    if obj is None:
        if ref.get("optional"):
            return None
        raise ConfigError(f'{label} "{ref["name"]}" not found')
    data = _object_data(obj, kind)
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise ConfigError(f"couldn't find key {ref['key']} in {label} {namespace}/{ref['name']}")
    return data[ref["key"]]


def resolve_env(
    pod: Obj, container: Obj, base: Mapping[str, str], lookup: Lookup, mapper: PathMapper
) -> dict[str, str]:
    """The full environment of a container process: `base`, then envFrom, then env."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(base)
    declared: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = source.get(key)
            if not ref:
                continue
            obj = lookup(kind, namespace, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                label = "configmap" if kind == "configmaps" else "secret"
                raise ConfigError(f'{label} "{ref["name"]}" not found')
            for name, value in _object_data(obj, kind).items():
                declared[prefix + name] = value
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            declared[name] = expand(var.get("value", ""), {**env, **declared})
            continue
        source = var["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in source:
            value = _key_ref(source["configMapKeyRef"], "configmaps", namespace, lookup)
        elif "secretKeyRef" in source:
            value = _key_ref(source["secretKeyRef"], "secrets", namespace, lookup)
        elif "resourceFieldRef" in source:
            value = _resource_field(container, source["resourceFieldRef"])
        else:
            raise ConfigError(f"unsupported valueFrom for {name}: {sorted(source)}")
        if value is not None:
            declared[name] = value
    env.update({k: localize(v, mapper) for k, v in declared.items()})
    return env


def _resource_field(container: Obj, ref: Obj) -> str:
    kind, _, resource = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    return str(value) if value is not None else "0"


def command_line(container: Obj, env: Mapping[str, str], mapper: PathMapper) -> list[str]:
    """`command` + `args` with `$(VAR)` expanded, mount paths and Service names rewritten."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    return [localize(expand(arg, env), mapper) for arg in argv]
