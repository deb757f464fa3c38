"""Kubeconfig files: the admin's (client certificate) and a pod's (service-account token)."""

from __future__ import annotations

import base64
import json
from pathlib import Path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    ca_pem: bytes,
    user: str,
    cert: tuple[Path, Path] | None = None,
    token: str | None = None,
    namespace: str | None = None,
    cluster_name: str = "datajuicer-test",
) -> Path:
    """Write a one-context kubeconfig (JSON, which is YAML) and return its path.

    Certificates are embedded, so the file stays valid wherever it is copied.
    """
    user_entry: dict[str, str] = {}
    if cert:
        user_entry["client-certificate-data"] = _b64(cert[0].read_bytes())
        user_entry["client-key-data"] = _b64(cert[1].read_bytes())
    if token:
        user_entry["token"] = token
    context: dict[str, str] = {"cluster": cluster_name, "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": cluster_name, "context": context}],
        "current-context": cluster_name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
