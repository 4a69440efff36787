"""Exact limits under concurrency: two gateway replicas sharing Redis let exactly the limit through, and
a concurrency limit is never exceeded at the worker."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest

from tests.conftest import REDIS_URL, Backend, gateway_settings, serve_gateway
from tests.limits.helpers import chat, complete, counting_worker, new_key, org_with_plan
from workersim.sim_settings import SimConfig


@pytest.fixture
def shared(pg_database: str, redis_prefix: str) -> Backend:
    """Replicas share limits only through Redis: the embedded default is one process by design."""
    return Backend("shared", pg_database, REDIS_URL, redis_prefix)


async def test_two_replicas_let_exactly_the_limit_through(shared: Backend, sims: Any) -> None:
    backend = shared
    replicas = [await serve_gateway(gateway_settings(backend, [s.url for s in sims])) for _ in range(2)]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
            org, _ = await org_with_plan(http, replicas[0].url, "exact-" + secrets.token_hex(3), rpm=10)
            key = (await new_key(http, replicas[0].url, org))["key"]
            results = await asyncio.gather(*(complete(http, replicas[i % 2].url, key) for i in range(100)))
        statuses = [r[0] for r in results]
        assert statuses.count(200) == 10 and statuses.count(429) == 90
        assert all(r[1]["error"]["code"] == "rate_limit_exceeded" for r in results if r[0] == 429)
        # Both replicas admitted some: the limit is shared, not per replica.
        admitted = [rep.app.runtime.limiter.stats.admitted for rep in replicas]
        assert sum(admitted) == 10
    finally:
        for rep in replicas:
            await rep.stop()


async def test_concurrency_limit_never_exceeded_at_the_worker(backend: Backend) -> None:
    # A slow worker (each answer takes ~0.3 s) so that requests overlap for real.
    config = SimConfig(worker_id="slow", time_scale=1.0, slow_start_s=0.3, seed=1)
    async with counting_worker(config) as (url, worker):
        n_replicas = 2 if backend.name == "shared" else 1
        replicas = [await serve_gateway(gateway_settings(backend, [url])) for _ in range(n_replicas)]
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
                org, _ = await org_with_plan(http, replicas[0].url, "conc-" + secrets.token_hex(3), concurrency=3)
                key = (await new_key(http, replicas[0].url, org))["key"]
                for _ in range(2):  # two waves: slots come back when requests end
                    results = await asyncio.gather(*(complete(http, replicas[i % n_replicas].url, key, chat())
                                                     for i in range(12)))
                    statuses = [r[0] for r in results]
                    assert statuses.count(200) >= 3 and set(statuses) <= {200, 429}
                    refused = [r for r in results if r[0] == 429]
                    assert all("concurrent requests" in r[1]["error"]["message"] for r in refused)
                    assert all(r[1]["error"]["type"] == "requests" for r in refused)
        finally:
            for rep in replicas:
                await rep.stop()
    assert worker.max_in_flight == 3
    assert worker.in_flight == 0
