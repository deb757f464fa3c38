"""Web identity end to end (an IAM role for a service account, as on EKS), with no mock: a
DataJuicerJob whose `objectStore.webIdentity` names a ServiceAccount and a role, and no
credentials Secret at all.

The kube-apiserver of the test cluster is the OpenID Connect issuer: the TokenRequest API signs the
token the process node projects into the runner pod (`serviceAccountToken` with the job's
audience), and it serves the keys that verify it at `/openid/v1/jwks` (service-account issuer
discovery, readable without credentials once `system:service-account-issuer-discovery` is bound
to `system:unauthenticated`, as a cluster that publishes its issuer does). SeaweedFS's STS
(`tests/harness/s3server.py`, `WebIdentityTrust`) fetches those keys over TLS with the cluster's
CA, checks the token's signature, issuer and audience and the role's trust policy (the token's
subject, `system:serviceaccount:<namespace>:<name>`), and hands out temporary keys; the runner
takes them through the standard AWS chain (`AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`, and
the store's endpoint, which is its STS's too, or `webIdentity.stsEndpoint`'s
`AWS_ENDPOINT_URL_STS`).

- a local-mode job succeeds with its input, work dir and output in the bucket, the output
  byte-identical to a local run, its token exchanged at an STS endpoint of its own;
- so does a kuberay-mode job, whose partition tasks run in a Ray worker that carries the
  identity (as the head does) and exchanges its own token;
- a token of another audience, and a role whose trust policy admits another ServiceAccount,
  each fail the job at once (exit 2) with the store's reason, and no token or key reaches the
  status, the Events or the runner's log.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from dj_operator.api import constants
from dj_runner import contract
from tests.harness.cluster import Cluster
from tests.harness.controlplane import SERVICE_ACCOUNT_ISSUER
from tests.harness.s3faults import FaultProxy
from tests.harness.s3server import S3Server, WebIdentityTrust, role_arn, start_s3_server
from tests.harness.waiting import wait_for
from tests.k8s import raycluster
from tests.k8s.operator_support import (
    DEMO_DATA,
    OperatorProcess,
    apply,
    ensure_crd,
    events,
    get_json,
    job_obj,
    runner_pods,
    wait_condition,
    with_test_ops,
)
from tests.k8s.test_object_storage import INPUT_KEY, OUTPUT_KEY, reference, store_job

pytestmark = pytest.mark.k8s
Obj = dict[str, object]

ACCOUNT = "dj-data"  # the ServiceAccount the job's pods run as
AUDIENCE = "sts.amazonaws.com"  # the operator's default audience, as on EKS
TRUSTED_ROLE = "dj-job"  # trusts ACCOUNT's tokens
OTHER_ROLE = "other-job"  # trusts another ServiceAccount's only
DISCOVERY_BINDING = "dj-test-issuer-discovery-unauthenticated"
#: Every JWT (a projected token, an STS session token) starts with a base64url '{"'.
JWT_PREFIX = "eyJ"


@pytest.fixture(scope="module")
def issuer_discovery(k8s_cluster: Cluster) -> Iterator[str]:
    """The apiserver's JWKS URI, readable without credentials (as the STS reads it)."""
    k8s_cluster.kubectl(
        "create",
        "clusterrolebinding",
        DISCOVERY_BINDING,
        "--clusterrole=system:service-account-issuer-discovery",
        "--group=system:unauthenticated",
    )
    jwks_uri = f"{k8s_cluster.server}/openid/v1/jwks"
    tls = ssl.create_default_context(cafile=str(k8s_cluster.control_plane.ca_file))

    def jwks() -> bytes | None:
        """The keys, as the STS asks for them: no credentials, no Accept header (the apiserver
        answers an Accept of application/json with 406: it serves application/jwk-set+json)."""
        try:
            with urllib.request.urlopen(jwks_uri, context=tls, timeout=5) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError:
            return None  # 403 until the binding is in the authorizer's cache

    try:
        body = wait_for(jwks, 30, "the apiserver's JWKS to be readable without credentials")
        assert json.loads(body)["keys"], body
        yield jwks_uri
    finally:
        k8s_cluster.kubectl("delete", "clusterrolebinding", DISCOVERY_BINDING, check=False)


@pytest.fixture
def s3(
    k8s_cluster: Cluster, issuer_discovery: str, namespace: str, tmp_path: Path
) -> Iterator[S3Server]:
    """A server whose STS trusts the cluster's tokens for AUDIENCE: TRUSTED_ROLE admits the
    namespace's ACCOUNT, OTHER_ROLE another ServiceAccount."""
    trust = WebIdentityTrust(
        issuer=SERVICE_ACCOUNT_ISSUER,
        jwks_uri=issuer_discovery,
        ca_file=k8s_cluster.control_plane.ca_file,
        audience=AUDIENCE,
        roles={
            TRUSTED_ROLE: f"system:serviceaccount:{namespace}:{ACCOUNT}",
            OTHER_ROLE: f"system:serviceaccount:{namespace}:someone-else",
        },
    )
    server = start_s3_server(tmp_path / "s3-server", web_identity=trust)
    yield server
    server.stop()
    assert not server.alive(), "weed mini is still running after stop"


@pytest.fixture
def bucket(s3: S3Server, namespace: str) -> str:
    name = s3.create_bucket(f"dj-{namespace}"[:63])
    s3.put_object(name, INPUT_KEY, DEMO_DATA.read_bytes())
    return name


@pytest.fixture
def identity_operator(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, under a policy that allows ACCOUNT and no Secret."""
    ensure_crd(k8s_cluster)
    k8s_cluster.kubectl("create", "serviceaccount", ACCOUNT, "-n", namespace)
    env = {"DJ_POLICY_ALLOWED_SERVICE_ACCOUNTS": ACCOUNT}
    op = OperatorProcess(k8s_cluster, namespace, tmp_path / "operator.log", env).start()
    yield op
    if op.proc is not None and op.proc.poll() is None:
        assert op.stop() == 0, op.tail()


def web_identity_job(
    name: str,
    s3: S3Server,
    bucket: str,
    role: str,
    audience: str | None = None,
    sts_endpoint: str | None = None,
    mode: str = "local",
) -> Obj:
    """A job on the bucket (local mode, or kuberay with one worker) whose pods carry ACCOUNT's
    identity for `role` (exchanged at `sts_endpoint`, if given, not the store's endpoint)."""
    job = store_job(name, s3, bucket, mode, workers=1)
    store = job["spec"]["storage"]["objectStore"]  # type: ignore[index]
    del store["credentialsSecret"]
    store["webIdentity"] = {"serviceAccountName": ACCOUNT, "roleArn": role_arn(role)}
    if audience is not None:
        store["webIdentity"]["audience"] = audience
    if sts_endpoint is not None:
        store["webIdentity"]["stsEndpoint"] = sts_endpoint
    # the runner pod runs the runner this test process imports (its PYTHONPATH)
    return with_test_ops(job)


def texts_of(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    """Where no token or key may appear: the status, the Events, `kubectl describe`, the
    runner's log."""
    logs = [
        cluster.kubectl("logs", "-n", namespace, p["metadata"]["name"], check=False).stdout
        for p in runner_pods(cluster, namespace, name)
    ]
    return {
        "status": json.dumps(job_obj(cluster, namespace, name)["status"]),
        "events": json.dumps(events(cluster, namespace, name)),
        "describe": cluster.kubectl("describe", "djjob", name, "-n", namespace).stdout,
        "runner logs": "\n".join(logs),
    }


def test_a_job_with_a_service_accounts_role_and_no_secret_is_byte_identical(
    k8s_cluster: Cluster,
    namespace: str,
    identity_operator: OperatorProcess,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    """The STS is reached at an address of its own (`webIdentity.stsEndpoint`: a proxy in front
    of the store, which sees the token exchange and nothing else), as a store whose STS is on
    another host than its S3 endpoint."""
    name = "s3-web-identity"
    with FaultProxy(s3.endpoint) as sts:
        job = web_identity_job(name, s3, bucket, TRUSTED_ROLE, sts_endpoint=sts.endpoint)
        apply(k8s_cluster, namespace, job)
        done = wait_condition(k8s_cluster, namespace, name, "Succeeded", timeout=400)
    assert done["status"]["restarts"] == 0
    assert s3.get_object(bucket, OUTPUT_KEY) == reference(tmp_path / "reference", job)
    assert sts.log, "no request reached the STS endpoint"
    assert {(method, path) for method, path, _ in sts.log} == {("POST", "/")}, sts.log

    (pod,) = runner_pods(k8s_cluster, namespace, name)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == ACCOUNT
    (volume,) = [v for v in spec["volumes"] if v["name"] == constants.TOKEN_VOLUME]
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == AUDIENCE
    (runner,) = [c for c in spec["containers"] if c["name"] == "runner"]
    env = {var["name"]: var.get("value") for var in runner["env"]}
    assert env[contract.ENV_AWS_ROLE_ARN] == role_arn(TRUSTED_ROLE)
    assert env[contract.ENV_AWS_ENDPOINT_URL_STS] == sts.endpoint
    assert env[contract.ENV_AWS_WEB_IDENTITY_TOKEN_FILE].endswith("/" + token["path"])
    assert contract.ENV_AWS_ACCESS_KEY_ID not in env
    assert contract.ENV_AWS_SECRET_ACCESS_KEY not in env
    secrets = get_json(k8s_cluster, namespace, "secrets")["items"]
    assert [s for s in secrets if s["type"] == "Opaque"] == []  # type: ignore[index]
    for where, text in texts_of(k8s_cluster, namespace, name).items():
        assert JWT_PREFIX not in text, where


def test_a_kuberay_job_whose_ray_pods_carry_the_identity_is_byte_identical(
    k8s_cluster: Cluster,
    namespace: str,
    identity_operator: OperatorProcess,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    """kuberay mode: the partition tasks run in the Ray worker, which reads and writes the
    bucket with the keys its own projected token is exchanged for (no Secret anywhere); the
    head and the worker run as ACCOUNT, with the token and without an API token."""
    name = "s3-wi-kr"
    job = web_identity_job(name, s3, bucket, TRUSTED_ROLE, mode="kuberay")
    apply(k8s_cluster, namespace, job)
    core = client.CoreV1Api(k8s_cluster.api_client())

    # Read while the job runs: the cluster goes once it finishes.
    pods = raycluster.wait_running(core, namespace, f"{name}-ray", 2)  # the head, the worker
    for pod in pods:
        assert pod.spec.service_account_name == ACCOUNT, pod.metadata.name
        assert pod.spec.automount_service_account_token is False, pod.metadata.name
        assert constants.TOKEN_VOLUME in {v.name for v in pod.spec.volumes}, pod.metadata.name
        (container,) = pod.spec.containers
        env = {var.name: var.value for var in container.env or []}
        assert env[contract.ENV_AWS_ROLE_ARN] == role_arn(TRUSTED_ROLE), pod.metadata.name
        assert contract.ENV_AWS_ACCESS_KEY_ID not in env, pod.metadata.name
    done = wait_condition(k8s_cluster, namespace, name, "Succeeded", timeout=500)
    assert done["status"]["restarts"] == 0
    assert s3.get_object(bucket, OUTPUT_KEY) == reference(tmp_path / "reference", job)
    secrets = get_json(k8s_cluster, namespace, "secrets")["items"]
    assert [s for s in secrets if s["type"] == "Opaque"] == []  # type: ignore[index]
    for where, text in texts_of(k8s_cluster, namespace, name).items():
        assert JWT_PREFIX not in text, where


@pytest.mark.parametrize(
    ("role", "audience", "reason"),
    [
        (TRUSTED_ROLE, "another-audience", "audience"),
        (OTHER_ROLE, None, "trust policy"),
    ],
    ids=["token-of-another-audience", "role-trusting-another-account"],
)
def test_a_token_the_store_refuses_fails_the_job_with_its_reason(
    k8s_cluster: Cluster,
    namespace: str,
    identity_operator: OperatorProcess,
    s3: S3Server,
    bucket: str,
    role: str,
    audience: str | None,
    reason: str,
) -> None:
    name = "s3-refused"
    apply(k8s_cluster, namespace, web_identity_job(name, s3, bucket, role, audience))
    failed = wait_condition(k8s_cluster, namespace, name, "Failed", timeout=240)
    failure = failed["status"]["failure"]
    assert (failure["reason"], failure["exitCode"]) == ("InvalidInput", 2), failure
    assert "AssumeRoleWithWebIdentity" in failure["message"], failure
    assert role_arn(role) in failure["message"], failure
    assert reason in failure["message"], failure
    assert failed["status"]["restarts"] == 0
    assert s3.request("GET", f"/{bucket}/{OUTPUT_KEY}").status == 404
    for where, text in texts_of(k8s_cluster, namespace, name).items():
        assert JWT_PREFIX not in text, where
