"""Client fixtures of the Kubernetes tests: the official client, as the admin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.harness.cluster import Cluster


@pytest.fixture
def api(k8s_cluster: Cluster) -> Iterator[client.ApiClient]:
    api_client = k8s_cluster.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)
