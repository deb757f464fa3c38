"""Fixtures for the object-storage tests: one real S3 server for the session, a bucket per test.

``s3_server`` starts SeaweedFS's ``weed mini`` (tests/harness/s3server.py) on free loopback
ports with its data under the session's pytest temp dir, and stops it at the end. ``s3_bucket``
gives each test a fresh bucket, so tests never see each other's objects. ``s3_proxy`` puts a
fault-injecting proxy (tests/harness/s3faults.py) in front of the server for one test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.harness.s3faults import FaultProxy
from tests.harness.s3server import S3Server, start_s3_server

_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3-server"))
    yield server
    server.stop()
    assert not server.alive(), "weed mini is still running after stop"


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket(f"dj-test-{next(_bucket_numbers):04d}")


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as proxy:
        yield proxy
