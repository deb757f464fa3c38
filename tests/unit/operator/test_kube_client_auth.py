"""The Kubernetes client sends the token a kubeconfig names (kubernetes 36.0.0 did not)."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client, config


def test_a_kubeconfig_token_reaches_the_authorization_header(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t0ken-value"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    conf = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=conf)
    bearer = conf.auth_settings().get("BearerToken")
    assert bearer is not None, "no bearer token setting: requests would be anonymous"
    assert bearer["key"] == "authorization" and bearer["value"] == "Bearer t0ken-value"
