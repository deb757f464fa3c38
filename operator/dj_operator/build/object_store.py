"""What a job on object storage (spec.storage.objectStore) puts into its runner and Ray pods: the
standard AWS environment (endpoint, region, credentials by secretKeyRef, never a value), the
ServiceAccount whose workload identity the pods carry, and that identity's projected token.

The same environment, token and identity go to the runner pod and to every Ray head and worker
pod, and nowhere else (not to init containers, the ConfigMap, annotations or the status)."""

from __future__ import annotations

from typing import Any

from dj_operator.api import constants as c
from dj_operator.api.types import JobSpec
from dj_runner import contract

Obj = dict[str, Any]

#: Where the projected web-identity token is read from (AWS_WEB_IDENTITY_TOKEN_FILE).
TOKEN_PATH = f"{c.TOKEN_DIR}/{c.TOKEN_FILE}"


def _secret_env(name: str, secret: str, key: str) -> Obj:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def env(spec: JobSpec) -> list[Obj]:
    """The AWS variables of the runner and Ray containers ([] without objectStore)."""
    store = spec.storage.object_store
    if store is None:
        return []
    out: list[Obj] = []
    if store.endpoint:
        out.append({"name": contract.ENV_AWS_ENDPOINT_URL, "value": store.endpoint})
    if store.region:
        out.append({"name": contract.ENV_AWS_REGION, "value": store.region})
    secret = store.credentials_secret
    if secret is not None:
        out.append(
            _secret_env(contract.ENV_AWS_ACCESS_KEY_ID, secret.name, secret.access_key_id_key)
        )
        out.append(
            _secret_env(
                contract.ENV_AWS_SECRET_ACCESS_KEY, secret.name, secret.secret_access_key_key
            )
        )
        if secret.session_token_key:
            out.append(
                _secret_env(contract.ENV_AWS_SESSION_TOKEN, secret.name, secret.session_token_key)
            )
    web = store.web_identity
    if web is not None and web.role_arn:
        out.append({"name": contract.ENV_AWS_ROLE_ARN, "value": web.role_arn})
        out.append({"name": contract.ENV_AWS_WEB_IDENTITY_TOKEN_FILE, "value": TOKEN_PATH})
    if web is not None and web.sts_endpoint:
        out.append({"name": contract.ENV_AWS_ENDPOINT_URL_STS, "value": web.sts_endpoint})
    return out


def env_names(spec: JobSpec) -> list[str]:
    """The variables ``env`` sets: a job's own runner.env may not set them too."""
    return [var["name"] for var in env(spec)]


def identity(spec: JobSpec) -> str | None:
    """The ServiceAccount whose workload identity the runner and Ray pods carry (webIdentity)."""
    store = spec.storage.object_store
    web = store.web_identity if store is not None else None
    return web.service_account_name if web is not None else None


def _projects_token(spec: JobSpec) -> bool:
    store = spec.storage.object_store
    web = store.web_identity if store is not None else None
    return web is not None and web.role_arn is not None


def token_volumes(spec: JobSpec) -> list[Obj]:
    """The projected web-identity token (webIdentity with a roleArn), else []."""
    if not _projects_token(spec):
        return []
    store = spec.storage.object_store
    assert store is not None and store.web_identity is not None
    token = {
        "audience": store.web_identity.audience,
        "expirationSeconds": c.TOKEN_EXPIRATION_SECONDS,
        "path": c.TOKEN_FILE,
    }
    return [
        {
            "name": c.TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": token}]},
        }
    ]


def token_mounts(spec: JobSpec) -> list[Obj]:
    """The token's mount in the runner and Ray containers, else []."""
    if not _projects_token(spec):
        return []
    return [{"name": c.TOKEN_VOLUME, "mountPath": c.TOKEN_DIR, "readOnly": True}]
