"""The shared-state suites on a private 6-node Redis Cluster: one cluster for the session, started the
first time a test here asks for it (``tests/private_cluster.py``).

``backend`` and ``shared`` are overridden here, so the existing tests imported into this package (see
``test_cluster_suites.py``) run against the cluster: the gateway is given one node's URL and finds the
rest by itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import RedisCluster

from tests.billing.conftest import ledger_engine, stream_key
from tests.conftest import Backend
from tests.private_cluster import PrivateCluster, private_cluster

__all__ = ["ledger_engine", "stream_key"]  # the ledger suite's fixtures, here with the cluster's redis_client


@pytest.fixture(scope="session")
async def redis_cluster() -> AsyncIterator[PrivateCluster]:
    async with private_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def backend(pg_database: str, redis_prefix: str, redis_cluster: PrivateCluster) -> Backend:
    return Backend("shared", pg_database, redis_cluster.url, redis_prefix)


@pytest.fixture
def shared(backend: Backend) -> Backend:
    return backend


@pytest.fixture
async def redis_client(redis_cluster: PrivateCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.url)
    yield client
    await client.aclose()
