"""Fixtures of the routing tests: a throwaway redis-server of a test's own (never the shared one), and the
state stores the index scripts run on."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from tests.conftest import REDIS_URL
from tests.private_redis import PrivateRedis

OwnRedis = PrivateRedis


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.kill()
    shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StateStore, KeySpace]]:
    """The same behaviour tests on both backends: in-process state, and the shared Redis under a key prefix
    of the test's own (removed afterwards)."""
    keys = KeySpace("gwtest-route-" + secrets.token_hex(4))
    if request.param == "memory":
        yield MemoryState(), keys
        return
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield RedisState(client), keys
    finally:
        found = [k async for k in client.scan_iter(match=f"{keys.prefix}*", count=1000)]
        if found:
            await client.delete(*found)
        await client.aclose()
