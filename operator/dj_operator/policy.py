"""The installation policy: what a DataJuicerJob may ask of the pods the operator creates for it.

A job's `spec.runner` passes security contexts, volumes, init containers, images and environment
into pods that the operator creates with its own ServiceAccount, and `spec.storage.objectStore`
names a Secret and a ServiceAccount whose credentials those pods then carry: without a policy,
whoever may create a DataJuicerJob may run any pod with any of its namespace's credentials. The installation (the chart's `policy` values, passed as
the DJ_POLICY_* variables of `SETTINGS`) decides what is allowed; the default allows what the
Pod Security Standard `restricted` allows, no Secret and no ServiceAccount. `check` refuses a job that asks for more
before any child exists, naming the field and the rule (`PolicyViolation`, a SpecError: the job
fails with reason InvalidSpec). Pure: no I/O.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dj_operator.api.fields import SpecError
from dj_runner import contract

Obj = dict[str, Any]

# Volume types of the Pod Security Standard `restricted`.
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
# Sysctls of the Pod Security Standard `baseline` (namespaced and safe).
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SAFE_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")


@dataclass(frozen=True)
class Policy:
    """The installation's rules (see SETTINGS for each one's variable and meaning)."""

    allow_privileged: bool = False
    allow_privilege_escalation: bool = False
    allow_host_path: bool = False
    allow_root: bool = False
    allowed_capabilities: frozenset[str] = frozenset()
    allowed_secrets: frozenset[str] = frozenset()
    allowed_service_accounts: frozenset[str] = frozenset()
    allowed_image_prefixes: tuple[str, ...] = ()
    allow_paths_outside_mount: bool = False
    network_policy: bool = True
    metrics_from: tuple[Obj, ...] = ()


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Setting:
    env: str
    field: str
    kind: str  # bool | list | json-list
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DJ_POLICY_ALLOW_PRIVILEGED",
        "allow_privileged",
        "bool",
        "privileged containers (securityContext.privileged: true)",
    ),
    Setting(
        "DJ_POLICY_ALLOW_PRIVILEGE_ESCALATION",
        "allow_privilege_escalation",
        "bool",
        "securityContext.allowPrivilegeEscalation: true",
    ),
    Setting("DJ_POLICY_ALLOW_HOST_PATH", "allow_host_path", "bool", "hostPath volumes"),
    Setting(
        "DJ_POLICY_ALLOW_ROOT",
        "allow_root",
        "bool",
        "running as root (runAsUser: 0, runAsNonRoot: false)",
    ),
    Setting(
        "DJ_POLICY_ALLOWED_CAPABILITIES",
        "allowed_capabilities",
        "list",
        "capabilities a container may add (comma-separated; none by default)",
    ),
    Setting(
        "DJ_POLICY_ALLOWED_SECRETS",
        "allowed_secrets",
        "list",
        "Secrets a job may use in volumes and env and as objectStore.credentialsSecret"
        " (comma-separated names; none by default)",
    ),
    Setting(
        "DJ_POLICY_ALLOWED_SERVICE_ACCOUNTS",
        "allowed_service_accounts",
        "list",
        "ServiceAccounts a job's pods may run as (objectStore.webIdentity; comma-separated"
        " names; none by default)",
    ),
    Setting(
        "DJ_POLICY_ALLOWED_IMAGE_PREFIXES",
        "allowed_image_prefixes",
        "list",
        "image prefixes a job may name (comma-separated; empty: any image)",
    ),
    Setting(
        "DJ_POLICY_ALLOW_PATHS_OUTSIDE_MOUNT",
        "allow_paths_outside_mount",
        "bool",
        "absolute dataset_path/export_path outside the storage mount and the job's own mounts",
    ),
    Setting(
        "DJ_JOB_NETWORK_POLICY",
        "network_policy",
        "bool",
        "create a NetworkPolicy per job (ingress to its pods only from its own pods)",
    ),
    Setting(
        "DJ_JOB_METRICS_FROM",
        "metrics_from",
        "json-list",
        "who may scrape the job's metrics ports (a JSON list of NetworkPolicyPeer; [] = anyone)",
    ),
)

# The rules a refusal names, and what would be valid.
RULES: dict[str, str] = {
    "privileged": "no privileged container (policy DJ_POLICY_ALLOW_PRIVILEGED)",
    "privilegeEscalation": "allowPrivilegeEscalation unset or false"
    " (policy DJ_POLICY_ALLOW_PRIVILEGE_ESCALATION)",
    "capabilities": "no added capability beyond the policy's DJ_POLICY_ALLOWED_CAPABILITIES",
    "root": "a non-root user: runAsUser >= 1 and runAsNonRoot not false"
    " (policy DJ_POLICY_ALLOW_ROOT)",
    "hostNamespaces": "no host network, PID or IPC namespace and no hostPort",
    "hostPath": "no hostPath volume (policy DJ_POLICY_ALLOW_HOST_PATH)",
    "volumeTypes": "a volume of type " + ", ".join(sorted(RESTRICTED_VOLUME_TYPES)),
    "secrets": "only the Secrets the policy names (DJ_POLICY_ALLOWED_SECRETS)",
    "serviceAccounts": "only the ServiceAccounts the policy names"
    " (DJ_POLICY_ALLOWED_SERVICE_ACCOUNTS)",
    "images": "an image under an allowed prefix (DJ_POLICY_ALLOWED_IMAGE_PREFIXES)",
    "seccomp": "seccompProfile RuntimeDefault or Localhost",
    "seLinux": "seLinuxOptions without user or role, type one of container_t,"
    " container_init_t, container_kvm_t",
    "appArmor": "appArmorProfile RuntimeDefault or Localhost",
    "procMount": "procMount Default",
    "sysctls": "only the safe sysctls " + ", ".join(sorted(SAFE_SYSCTLS)),
    "pathsOutsideMount": "a path under the storage mount or a mount of the job's own, or an"
    " s3:// URI (policy DJ_POLICY_ALLOW_PATHS_OUTSIDE_MOUNT)",
}


class PolicyViolation(SpecError):
    """A job asks for what the installation policy refuses: names the field and the rule."""

    def __init__(self, field_path: str, value: object, rule: str) -> None:
        self.rule = rule
        expected = RULES[rule]
        super().__init__(
            field_path,
            value,
            expected,
            f"{field_path}: got {value!r}; refused by the installation policy"
            f" (rule {rule}): expected {expected}",
        )


# -- settings ----------------------------------------------------------------------------------


def _parse(setting: Setting, text: str) -> object:
    if setting.kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{setting.env}: got {text!r}; expected true or false")
        return text.lower() == "true"
    if setting.kind == "list":
        items = [item.strip() for item in text.split(",") if item.strip()]
        if setting.field == "allowed_image_prefixes":
            return tuple(items)
        if setting.field == "allowed_capabilities":
            items = [item.upper().removeprefix("CAP_") for item in items]
        return frozenset(items)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{setting.env}: got {text!r}; expected a JSON list ({exc})") from exc
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise ValueError(f"{setting.env}: got {text!r}; expected a JSON list of objects")
    return tuple(value)


def policy_from_env(env: Mapping[str, str]) -> Policy:
    """The policy of SETTINGS' variables (unset or empty: the default); ValueError names a bad
    variable, its value and what would be valid."""
    values: dict[str, object] = {}
    for setting in SETTINGS:
        text = env.get(setting.env, "").strip()
        if text and text != "null":
            values[setting.field] = _parse(setting, text)
    return Policy(**values)  # type: ignore[arg-type]


# -- checks ------------------------------------------------------------------------------------


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_container_context(sc: Any, path: str, policy: Policy) -> None:
    sc = _dict(sc)
    if sc.get("privileged") is True and not policy.allow_privileged:
        raise PolicyViolation(f"{path}.privileged", True, "privileged")
    if (
        sc.get("allowPrivilegeEscalation") is True
        and not policy.allow_privilege_escalation
        and not policy.allow_privileged
    ):
        raise PolicyViolation(f"{path}.allowPrivilegeEscalation", True, "privilegeEscalation")
    for index, cap in enumerate(_list(_dict(sc.get("capabilities")).get("add"))):
        name = str(cap).upper().removeprefix("CAP_")
        if name not in policy.allowed_capabilities:
            raise PolicyViolation(f"{path}.capabilities.add[{index}]", cap, "capabilities")
    proc = sc.get("procMount")
    if proc not in (None, "Default"):
        raise PolicyViolation(f"{path}.procMount", proc, "procMount")
    if _dict(sc.get("windowsOptions")).get("hostProcess") is True:
        raise PolicyViolation(f"{path}.windowsOptions.hostProcess", True, "hostNamespaces")
    _check_common_context(sc, path, policy)


def _check_common_context(sc: Obj, path: str, policy: Policy) -> None:
    """Fields a pod and a container context share."""
    if not policy.allow_root:
        if sc.get("runAsUser") == 0:
            raise PolicyViolation(f"{path}.runAsUser", 0, "root")
        if sc.get("runAsNonRoot") is False:
            raise PolicyViolation(f"{path}.runAsNonRoot", False, "root")
    seccomp = _dict(sc.get("seccompProfile")).get("type")
    if seccomp is not None and seccomp not in ("RuntimeDefault", "Localhost"):
        raise PolicyViolation(f"{path}.seccompProfile.type", seccomp, "seccomp")
    apparmor = _dict(sc.get("appArmorProfile")).get("type")
    if apparmor is not None and apparmor not in ("RuntimeDefault", "Localhost"):
        raise PolicyViolation(f"{path}.appArmorProfile.type", apparmor, "appArmor")
    selinux = _dict(sc.get("seLinuxOptions"))
    for key in ("user", "role"):
        if selinux.get(key):
            raise PolicyViolation(f"{path}.seLinuxOptions.{key}", selinux[key], "seLinux")
    if selinux.get("type", "") not in SAFE_SELINUX_TYPES:
        raise PolicyViolation(f"{path}.seLinuxOptions.type", selinux["type"], "seLinux")


def _check_pod_context(sc: Any, path: str, policy: Policy) -> None:
    sc = _dict(sc)
    _check_common_context(sc, path, policy)
    for index, sysctl in enumerate(_list(sc.get("sysctls"))):
        name = _dict(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            raise PolicyViolation(f"{path}.sysctls[{index}].name", name, "sysctls")


def image_allowed(image: str, prefix: str) -> bool:
    """Whether ``image`` is under ``prefix``, matched at a boundary: ``registry.example.org``
    admits ``registry.example.org/dj:1`` but not ``registry.example.org.evil.io/dj:1``; a prefix
    ending in ``/``, ``:`` or ``@`` (or naming the whole image) matches as it is."""
    if not image.startswith(prefix):
        return False
    return prefix.endswith(("/", ":", "@")) or image[len(prefix) :][:1] in ("", "/", ":", "@")


def _check_image(image: Any, path: str, policy: Policy) -> None:
    if image is None or not policy.allowed_image_prefixes:
        return
    if not any(image_allowed(str(image), prefix) for prefix in policy.allowed_image_prefixes):
        raise PolicyViolation(path, image, "images")


def _check_secret(name: Any, path: str, policy: Policy) -> None:
    if name not in policy.allowed_secrets:
        raise PolicyViolation(path, name, "secrets")


def _check_env(container: Obj, path: str, policy: Policy) -> None:
    for index, var in enumerate(_list(container.get("env"))):
        ref = _dict(_dict(_dict(var).get("valueFrom")).get("secretKeyRef"))
        if ref:
            _check_secret(
                ref.get("name"), f"{path}.env[{index}].valueFrom.secretKeyRef.name", policy
            )
    for index, source in enumerate(_list(container.get("envFrom"))):
        ref = _dict(_dict(source).get("secretRef"))
        if ref:
            _check_secret(ref.get("name"), f"{path}.envFrom[{index}].secretRef.name", policy)


def _check_volume(volume: Obj, path: str, policy: Policy) -> None:
    kinds = [k for k in volume if k != "name"]
    for kind in kinds:
        if kind == "hostPath":
            if not policy.allow_host_path:
                raise PolicyViolation(f"{path}.hostPath", volume[kind], "hostPath")
        elif kind not in RESTRICTED_VOLUME_TYPES:
            raise PolicyViolation(f"{path}.{kind}", volume[kind], "volumeTypes")
    secret = _dict(volume.get("secret"))
    if "secret" in volume:
        _check_secret(secret.get("secretName"), f"{path}.secret.secretName", policy)
    for index, source in enumerate(_list(_dict(volume.get("projected")).get("sources"))):
        ref = _dict(source).get("secret")
        if ref is not None:
            name = _dict(ref).get("name")
            _check_secret(name, f"{path}.projected.sources[{index}].secret.name", policy)


def _check_object_store(store: Obj, policy: Policy) -> None:
    """The credentials an object-store job's pods carry: only a Secret and a ServiceAccount
    the installation names."""
    path = "spec.storage.objectStore"
    secret = _dict(store.get("credentialsSecret"))
    if secret:
        _check_secret(secret.get("name"), f"{path}.credentialsSecret.name", policy)
    identity = _dict(store.get("webIdentity"))
    if identity:
        name = identity.get("serviceAccountName")
        if name not in policy.allowed_service_accounts:
            raise PolicyViolation(f"{path}.webIdentity.serviceAccountName", name, "serviceAccounts")


def check_job(job_spec: Any, policy: Policy = DEFAULT_POLICY) -> None:
    """Refuse (PolicyViolation) the first thing `job_spec` (a DataJuicerJob's raw `spec`, as
    the API holds it) asks of its pods that `policy` does not allow."""
    spec = _dict(job_spec)
    runner = _dict(spec.get("runner"))
    ray = _dict(spec.get("ray"))
    _check_object_store(_dict(_dict(spec.get("storage")).get("objectStore")), policy)
    base = "spec.runner"
    for key in HOST_NAMESPACES:
        if runner.get(key):
            raise PolicyViolation(f"{base}.{key}", runner[key], "hostNamespaces")
    _check_image(runner.get("image"), f"{base}.image", policy)
    _check_image(ray.get("image"), "spec.ray.image", policy)
    _check_container_context(runner.get("securityContext"), f"{base}.securityContext", policy)
    _check_pod_context(runner.get("podSecurityContext"), f"{base}.podSecurityContext", policy)
    _check_env(runner, base, policy)
    for index, volume in enumerate(_list(runner.get("volumes"))):
        _check_volume(_dict(volume), f"{base}.volumes[{index}]", policy)
    for index, init in enumerate(_list(runner.get("initContainers"))):
        path = f"{base}.initContainers[{index}]"
        init = _dict(init)
        _check_image(init.get("image"), f"{path}.image", policy)
        _check_container_context(init.get("securityContext"), f"{path}.securityContext", policy)
        _check_env(init, path, policy)
        for port_index, port in enumerate(_list(init.get("ports"))):
            if _dict(port).get("hostPort"):
                raise PolicyViolation(
                    f"{path}.ports[{port_index}].hostPort", port["hostPort"], "hostNamespaces"
                )


def _mount_roots(job_spec: Any, mount_path: str | None) -> Iterator[str]:
    if mount_path is not None:
        yield mount_path
    runner = _dict(_dict(job_spec).get("runner"))
    for mount in _list(runner.get("volumeMounts")):
        path = _dict(mount).get("mountPath")
        if isinstance(path, str) and path.startswith("/"):
            yield posixpath.normpath(path)


def check_paths(
    paths: Mapping[str, str],
    mount_path: str | None,
    job_spec: Any,
    field: str,
    policy: Policy = DEFAULT_POLICY,
) -> None:
    """Refuse a recipe path (as the pod resolves it) outside the storage mount (None: object
    storage, no mount) and the job's own volume mounts: an absolute dataset_path such as
    /etc/passwd reads the image's files. An ``s3://`` URI names no file of the pod's and is
    not checked here."""
    if policy.allow_paths_outside_mount:
        return
    roots = list(_mount_roots(job_spec, mount_path))
    for key, path in paths.items():
        if path.startswith(contract.S3_SCHEME):
            continue  # object storage: no file of the pod's
        if not any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots):
            raise PolicyViolation(f"{field}.{key}", path, "pathsOutsideMount")
