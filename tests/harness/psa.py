"""The Pod Security Standard `restricted` as one pure check of a pod spec, for the scanner tests.

Written from the standard's table of controls (baseline and restricted, Kubernetes 1.30+): host
namespaces and ports, privileged containers, capabilities, hostPath and other volume types,
/proc mount, seccomp, SELinux, AppArmor, sysctls, privilege escalation and non-root users. It
checks a pod *spec* (a Pod's or a template's), so it also serves RayCluster templates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]

VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
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
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t"}


def _containers(spec: Obj) -> Iterator[tuple[str, Obj]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            yield f"{key}[{container.get('name')}]", container


def restricted_violations(spec: Obj) -> list[str]:
    """Every way `spec` breaks `restricted` (empty: it would be admitted)."""
    out: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"{key}: true")
    if spec.get("hostUsers") is False:
        pass  # allowed (user namespaces)
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= VOLUME_TYPES:
            out.append(f"volume {volume.get('name')}: type {sorted(kinds - VOLUME_TYPES)}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl.get('name')}")

    def selinux(sc: Obj, where: str) -> None:
        options = sc.get("seLinuxOptions") or {}
        if options.get("user") or options.get("role"):
            out.append(f"{where}: seLinuxOptions user/role")
        if options.get("type", "") not in SELINUX_TYPES:
            out.append(f"{where}: seLinuxOptions.type {options['type']}")

    def profile(sc: Obj, key: str) -> str | None:
        return (sc.get(key) or {}).get("type")

    selinux(pod_sc, "pod")
    if profile(pod_sc, "appArmorProfile") not in (None, "RuntimeDefault", "Localhost"):
        out.append("pod: appArmorProfile")
    pod_seccomp = profile(pod_sc, "seccompProfile")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod: seccompProfile {pod_seccomp}")
    if pod_sc.get("runAsUser") == 0:
        out.append("pod: runAsUser 0")
    for where, container in _containers(spec):
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{where}: capabilities.add {caps['add']}")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{where}: procMount {sc['procMount']}")
        selinux(sc, where)
        if profile(sc, "appArmorProfile") not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where}: appArmorProfile")
        seccomp = profile(sc, "seccompProfile") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{where}: seccompProfile {seccomp}")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser 0")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']}")
    return out
