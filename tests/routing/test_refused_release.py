"""A request refused by a stage after the router reserved a worker's in-flight slot releases that slot:
a burst of 429s must not make the router believe the workers are busy."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from tests.conftest import MODEL, Backend
from tests.limits.helpers import complete, new_key, org_with_plan


async def _inflight(gateway: Any, backend: Backend) -> int:
    rt = gateway.app.runtime
    keys = [rt.keyspace.inflight(MODEL, w.id) for w in rt.pool.all()]
    if backend.name == "embedded":
        return sum(len(rt.local_state.zset(k)) for k in keys)
    client = aioredis.Redis.from_url(backend.redis_url)
    try:
        return sum([await client.zcard(k) for k in keys])
    finally:
        await client.aclose()


async def test_refused_requests_release_their_routing_slot(gateway: Any, backend: Backend) -> None:
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, "refused-" + secrets.token_hex(3), rpm=1)
        key = (await new_key(http, gateway.url, org))["key"]
        statuses = [(await complete(http, gateway.url, key))[0] for _ in range(6)]
    assert statuses[0] == 200 and statuses[1:] == [429] * 5
    assert await _inflight(gateway, backend) == 0
