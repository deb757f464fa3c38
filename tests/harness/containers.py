"""Container mode of the process node: a pod's container runs with `podman run` from its image.

Process mode (the default) runs a container's command as a local process. In container mode the
same container runs from its real image, so whatever a kubelet would refuse or break is refused or
broken here too:

- `podman run --network host` (pods stay on 127.0.0.1, as in process mode), `--pull never` (the
  image must have been built or loaded locally), the pod's name as hostname;
- volumes as bind mounts at their real mount paths (`readOnly` enforced, `subPath` resolved),
  so nothing is rewritten: command, args and env reach the container exactly as written;
- env: the pod's `envFrom` and `env`, `KUBERNETES_SERVICE_HOST`/`PORT`, and the pod's generated
  kubeconfig, bind-mounted read-only at `KUBECONFIG_PATH`; nothing of the host's environment;
- the merged pod and container `securityContext` enforced: `runAsUser`/`runAsGroup` (else the
  image's user), `runAsNonRoot` (checked against the effective user, as the kubelet does: a
  non-numeric image user or uid 0 is refused with CreateContainerConfigError),
  `readOnlyRootFilesystem` (`--read-only`, without podman's extra tmpfs mounts), capabilities
  (`--cap-drop`/`--cap-add`), `allowPrivilegeEscalation: false` (no-new-privileges), `privileged`,
  `seccompProfile`, `fsGroup` and `supplementalGroups`;
- volume ownership as a kubelet sets it: emptyDir directories are world-writable; with `fsGroup`,
  emptyDir and claim directories are group-owned by it (setgid, group-writable; skipped when the
  volume's root already is, like `fsGroupChangePolicy: OnRootMismatch`); configMap, secret and
  projected files belong to the effective user.

The podman process is the container's local process: signals sent to it are forwarded to the
container (SIGTERM on deletion), its exit status is the container's, and `cleanup` removes a
container whose podman process was killed. podman reads `CONTAINERS_CONF` (hack/containers.conf:
runc and the ulimits Ray needs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.binaries import REPO_ROOT
from tests.harness.podenv import ConfigError, Lookup, PathMapper, command_line, resolve_env

Obj = dict[str, Any]
KUBECONFIG_PATH = "/var/run/process-node/kubeconfig"
CONTAINERS_CONF = REPO_ROOT / "hack" / "containers.conf"
NO_MAPPING = PathMapper({})


class ContainerModeUnavailable(RuntimeError):
    """podman is missing: container mode cannot run on this machine."""


def effective_security_context(pod: Obj, container: Obj) -> Obj:
    """The pod's securityContext overridden field by field by the container's."""
    pod_sc = dict(pod["spec"].get("securityContext") or {})
    merged = {
        k: pod_sc[k]
        for k in (
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "seccompProfile",
            "fsGroup",
            "supplementalGroups",
        )
        if k in pod_sc
    }
    merged.update(container.get("securityContext") or {})
    return merged


def _numeric_user(user: str) -> tuple[int | None, int | None]:
    """An image's `User` ("1000", "1000:1000", "name") as (uid, gid); None where not numeric."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    uid = int(name) if name.isdigit() else None
    gid = int(group) if group.isdigit() else (None if group else uid)
    return uid, gid


@dataclass(frozen=True)
class Identity:
    """Who the container's process runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_identity(sc: Obj, image_user: str, container_name: str) -> Identity:
    """The effective user, refusing what the kubelet refuses for `runAsNonRoot`."""
    image_uid, image_gid = _numeric_user(image_user)
    uid = sc.get("runAsUser", image_uid)
    if sc.get("runAsNonRoot"):
        if uid is None:
            raise ConfigError(
                f"container {container_name}: image has non-numeric user ({image_user}), "
                "cannot verify user is non-root"
            )
        if int(uid) == 0:
            raise ConfigError(
                f"container {container_name}: container has runAsNonRoot and image will run as root"
            )
    if uid is None:
        raise ConfigError(
            f"container {container_name}: image user {image_user!r} is not numeric; "
            "set securityContext.runAsUser"
        )
    gid = sc.get("runAsGroup", image_gid if image_gid is not None else 0)
    groups = [int(g) for g in sc.get("supplementalGroups") or []]
    if sc.get("fsGroup") is not None:
        groups.append(int(sc["fsGroup"]))
    return Identity(int(uid), int(gid), tuple(dict.fromkeys(groups)))


def security_args(sc: Obj) -> list[str]:
    """podman options for the kernel-side settings of a securityContext."""
    args: list[str] = []
    if sc.get("privileged"):
        args.append("--privileged")
    if sc.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    caps = sc.get("capabilities") or {}
    args += [f"--cap-drop={c}" for c in caps.get("drop") or []]
    args += [f"--cap-add={c}" for c in caps.get("add") or []]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp == "Localhost":
        raise ConfigError("seccompProfile Localhost is not supported by the process node")
    return args


def _volume_kinds(pod: Obj) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for volume in pod["spec"].get("volumes") or []:
        kinds[volume["name"]] = next((k for k in volume if k != "name"), "")
    return kinds


def prepare_volume_ownership(
    pod: Obj, volumes: Mapping[str, Path], identity: Identity, fs_group: int | None
) -> None:
    """Set up each volume's ownership and modes as a kubelet would for this identity."""
    for name, kind in _volume_kinds(pod).items():
        local = volumes.get(name)
        if local is None or not local.exists():
            continue
        if kind == "emptyDir":
            local.chmod(0o777)
        if kind in ("emptyDir", "persistentVolumeClaim") and fs_group is not None:
            root = local.stat()
            if root.st_gid == fs_group and root.st_mode & 0o2070 == 0o2070:
                continue  # already set up (fsGroupChangePolicy OnRootMismatch)
            for path in [local, *local.rglob("*")]:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(path, -1, fs_group, follow_symlinks=False)
                    if path.is_dir() and not path.is_symlink():
                        path.chmod(path.stat().st_mode | 0o2070)
                    elif path.is_file():
                        path.chmod(path.stat().st_mode | 0o060)
        if kind in ("configMap", "secret", "projected", "downwardAPI"):
            group = fs_group if fs_group is not None else identity.gid
            for path in [local, *local.rglob("*")]:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(path, identity.uid, group, follow_symlinks=False)


@dataclass
class ContainerRuntime:
    """Builds and cleans up the `podman run` of a pod's containers."""

    podman: str = "podman"
    containers_conf: Path = CONTAINERS_CONF
    started: set[str] = field(default_factory=set)
    _users: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        found = shutil.which(self.podman)
        if found is None:
            raise ContainerModeUnavailable(
                "container mode needs podman (apt-get install podman runc); it is not on PATH"
            )
        self.podman = found

    def host_env(self) -> dict[str, str]:
        """The environment of the podman process itself (never passed into the container)."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env["CONTAINERS_CONF"] = str(self.containers_conf)
        return env

    def image_user(self, image: str) -> str:
        """The image's configured user (`USER` of its Dockerfile), "" for root."""
        with self._lock:
            if image in self._users:
                return self._users[image]
        out = subprocess.run(
            [self.podman, "image", "inspect", "--format", "{{json .Config.User}}", image],
            capture_output=True,
            text=True,
            env=self.host_env(),
            timeout=60,
        )
        if out.returncode != 0:
            raise ConfigError(
                f'image "{image}" is not present on the node (container mode never pulls): '
                f"{out.stderr.strip()}"
            )
        user = str(json.loads(out.stdout.strip() or '""') or "")
        with self._lock:
            self._users[image] = user
        return user

    def container_name(self, pod: Obj, container: Obj) -> str:
        meta = pod["metadata"]
        name = f"kpn-{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}-{container['name']}"
        return name[:250]

    def command(
        self,
        pod: Obj,
        container: Obj,
        lookup: Lookup,
        volumes: Mapping[str, Path],
        server: str,
        kubeconfig: Path | None,
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of the local `podman run` process of one container.

        Raises ConfigError for what the kubelet reports as CreateContainerConfigError.
        """
        image = container.get("image") or ""
        if not image:
            raise ConfigError(f"container {container['name']}: no image")
        sc = effective_security_context(pod, container)
        identity = resolve_identity(sc, self.image_user(image), container["name"])
        prepare_volume_ownership(pod, volumes, identity, sc.get("fsGroup"))
        base = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": server.rsplit(":", 1)[1],
        }
        args = [
            self.podman,
            "run",
            "--rm",
            "--replace",
            f"--name={self.container_name(pod, container)}",
            "--pull=never",
            "--network=host",
            f"--hostname={pod['metadata']['name']}",
            "--log-driver=none",
            f"--user={identity.uid}:{identity.gid}",
            *[f"--group-add={g}" for g in identity.groups],
            *security_args(sc),
        ]
        if kubeconfig is not None:
            os.chown(kubeconfig, identity.uid, identity.gid)
            args.append(f"--volume={kubeconfig}:{KUBECONFIG_PATH}:ro")
            base["KUBECONFIG"] = KUBECONFIG_PATH
        for mount in container.get("volumeMounts") or []:
            local = Path(volumes[mount["name"]])
            if mount.get("subPath"):
                local = local / mount["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            options = "ro" if mount.get("readOnly") else "rw"
            args.append(f"--volume={local}:{mount['mountPath']}:{options}")
        env = resolve_env(pod, container, base, lookup, NO_MAPPING)
        for key, value in env.items():
            args.append(f"--env={key}={value}")
        if container.get("workingDir"):
            args.append(f"--workdir={container['workingDir']}")
        # Kubernetes semantics: `command` replaces the image's ENTRYPOINT (and drops its CMD),
        # `args` replace its CMD.
        command = command_line({"command": container.get("command") or []}, env, NO_MAPPING)
        if command:
            args.append(f"--entrypoint={json.dumps(command)}")
        args.append(image)
        args += command_line({"args": container.get("args") or []}, env, NO_MAPPING)
        with self._lock:
            self.started.add(self.container_name(pod, container))
        return args, self.host_env()

    def cleanup(self, pod: Obj, container: Obj) -> None:
        """Remove the container if it outlived its podman process (which was killed)."""
        self._remove([self.container_name(pod, container)])

    def stop_all(self) -> None:
        """Remove every container this runtime started (the node is stopping)."""
        with self._lock:
            names = sorted(self.started)
            self.started.clear()
        self._remove(names)

    def _remove(self, names: list[str]) -> None:
        if not names:
            return
        subprocess.run(
            [self.podman, "rm", "--force", "--ignore", "--time=0", *names],
            capture_output=True,
            env=self.host_env(),
            timeout=120,
            check=False,
        )


BUILD_SCRIPT = REPO_ROOT / "hack" / "build-image.sh"
BUILD_TIMEOUT_SECONDS = 3600


def require_podman() -> str:
    """podman's path, or a failure that says how to install it (never a skip)."""
    found = shutil.which("podman")
    if found is None:
        raise ContainerModeUnavailable(
            "podman is not installed: the image tests and container mode need it "
            "(apt-get install buildah podman mmdebstrap skopeo runc; .ci/run does this)"
        )
    return found


def project_image() -> str:
    """The project's image, built by hack/build-image.sh if it is not current."""
    require_podman()
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    if built.returncode != 0:
        raise RuntimeError(
            f"hack/build-image.sh failed ({built.returncode}):\n{built.stdout[-4000:]}\n"
            f"{built.stderr[-4000:]}"
        )
    ref = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-image"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return ref.stdout.strip()
