"""A master of the Redis Cluster killed mid-load (its own cluster: this one is damaged on purpose).

Two gateway replicas serve a steady load; the master that holds both the usage stream's slot and the
organisation's limits is killed. Every request is answered (200: local state covers the gap, never a
500), the shared state serves again within 20 s of the kill (its replica promoted, the slot map learnt
again), limits are exact afterwards, and the ledger holds every answered request exactly once (the
records the dead master had not replicated come back from the replicas' spools).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from billing.ledger.ledger_tables import UsageHourly, UsageRow
from gateway.state.redis import RedisState
from gateway.state.resp_cluster import ClusterResp
from gateway.state.slots import key_slot
from tests.conftest import Backend, ServedGateway, gateway_settings, serve_gateway
from tests.limits.helpers import complete, new_key, org_with_plan
from tests.private_cluster import PrivateCluster, private_cluster
from workersim.run import RunningSim


@pytest.fixture(scope="module")
async def doomed_cluster() -> AsyncIterator[PrivateCluster]:
    async with private_cluster() as cluster:
        yield cluster


def _fallbacks(replicas: list[ServedGateway]) -> int:
    return sum(r.app.runtime.limiter.stats.local_fallbacks + r.app.runtime.router.stats.local_fallbacks
               for r in replicas)


async def _org_on(http: aiohttp.ClientSession, replicas: list[ServedGateway], owner: Any,
                  **plan: Any) -> tuple[str, str]:
    """A new organisation whose limits live on the master ``owner`` (any when None): (its key, its id)."""
    rt = replicas[0].app.runtime
    assert isinstance(rt.state, RedisState) and isinstance(rt.state.lean, ClusterResp)
    lean = rt.state.lean
    await lean.refresh()
    for _ in range(40):
        org, _ = await org_with_plan(http, replicas[0].url, "fo-" + secrets.token_hex(3), **plan)
        if owner is None or lean.owner(key_slot(rt.keyspace.limit_buckets(org))) == owner:
            return str((await new_key(http, replicas[0].url, org))["key"]), org
    raise AssertionError("no organisation landed on the master")


async def _rows(replicas: list[ServedGateway], org: str, expected: int) -> tuple[int, int]:
    rt = replicas[0].app.runtime
    count = hourly = 0
    for _ in range(300):
        for r in replicas:
            await r.app.runtime.billing.flush()
        async with rt.sessions() as s:
            count = int((await s.execute(select(func.count()).where(UsageRow.org_id == org))).scalar_one())
            hourly = int((await s.execute(select(func.coalesce(func.sum(UsageHourly.requests), 0))
                                          .where(UsageHourly.org_id == org))).scalar_one())
        if count >= expected:
            break
        await asyncio.sleep(0.1)
    return count, hourly


async def test_a_master_killed_mid_load(doomed_cluster: PrivateCluster, pg_database: str, redis_prefix: str,
                                        sims: list[RunningSim], caplog: pytest.LogCaptureFixture) -> None:
    backend = Backend("shared", pg_database, doomed_cluster.url, redis_prefix + "-failover")
    settings = gateway_settings(backend, [s.url for s in sims], redis_timeout_s=0.5)
    replicas = [await serve_gateway(settings) for _ in range(2)]
    try:
        rt = replicas[0].app.runtime
        stream = rt.keyspace.usage_stream()
        victim = await doomed_cluster.master_of(stream)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as http:
            key, org = await _org_on(http, replicas, ("127.0.0.1", victim.port), rpm=1_000_000)
            statuses: list[int] = []
            stop = asyncio.Event()

            async def load(n: int) -> None:
                i = n
                while not stop.is_set():
                    status = (await complete(http, replicas[i % 2].url, key))[0]
                    statuses.append(status)
                    i += 1

            loaders = [asyncio.create_task(load(n)) for n in range(6)]
            await asyncio.sleep(1.5)
            served_before = len(statuses)
            victim.kill()
            killed_at = time.monotonic()
            # Shared state serves again once the fallback counters stop growing (for 2 s running).
            last_change, seen = killed_at, _fallbacks(replicas)
            while time.monotonic() - last_change < 2.0 and time.monotonic() - killed_at < 30:
                await asyncio.sleep(0.1)
                now = _fallbacks(replicas)
                if now != seen:
                    seen, last_change = now, time.monotonic()
            stop.set()
            await asyncio.gather(*loaders)
            resumed_s = last_change - killed_at
            print(f"failover: {len(statuses)} requests, {seen} answered from local state, shared state back "
                  f"{resumed_s:.1f}s after the kill")
            assert served_before > 0 and seen > 0  # the kill was felt (local fallback), then recovered
            assert resumed_s < 20, f"shared state back {resumed_s:.1f}s after the kill"
            assert set(statuses) == {200}, sorted(set(statuses))
            down = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()
                    and r.name == "gateway.state"]
            assert any(f"127.0.0.1:{victim.port} unreachable" in m for m in down), down  # the clear log line

            # Limits exact afterwards, on the promoted replica's slots as on the others.
            await doomed_cluster.wait_healthy()
            exact_key, _ = await _org_on(http, replicas, None, rpm=10)
            results = await asyncio.gather(*(complete(http, replicas[i % 2].url, exact_key) for i in range(30)))
            assert [r[0] for r in results].count(200) == 10

        count, hourly = await _rows(replicas, org, len(statuses))
        assert (count, hourly) == (len(statuses), len(statuses))  # none lost, none doubled
    finally:
        for rep in replicas:
            await rep.stop()
