"""Concurrency leases are short and renewed while their request lives: a replica that dies (SIGKILL, nothing
settled) frees its leases within the short lease; a request longer than the lease keeps its slot; the
renewal is one pipelined round trip per tick for every lease of the replica, not a call per request."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gateway.config import Settings
from tests.conftest import ADMIN_KEY, REDIS_URL, Backend, gateway_settings, serve_gateway
from tests.limits.helpers import chat, complete, counting_worker, new_key, org_with_plan
from tests.private_redis import private_redis
from workersim.run import free_port
from workersim.sim_settings import SimConfig

LEASE_S = 1.0


def test_leases_are_short_by_default() -> None:
    assert Settings().limits_lease_s <= 30.0


@contextlib.asynccontextmanager
async def replica_process(backend: Backend, worker: str, lease_s: float) -> AsyncIterator[tuple[str, int]]:
    """A gateway in its own process (to be SIGKILLed: nothing settles); yields (url, pid)."""
    port = free_port()
    env = {**os.environ, "GATEWAY_DATABASE_URL": backend.database_url, "GATEWAY_REDIS_URL": backend.redis_url,
           "GATEWAY_REDIS_PREFIX": backend.redis_prefix, "GATEWAY_WORKERS": worker, "GATEWAY_PORT": str(port),
           "GATEWAY_ADMIN_KEY": ADMIN_KEY, "GATEWAY_LIMITS_LEASE_S": str(lease_s), "GATEWAY_METERING_ENABLED": "0",
           "GATEWAY_KEY_CACHE_TTL_S": "0.5"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "serve", env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url + "/health") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the gateway process did not start")
        yield url, proc.pid
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _in_flight(worker: Any, n: int) -> None:
    for _ in range(200):
        if worker.in_flight >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{worker.in_flight} requests in flight, expected {n}")


async def test_a_dead_replicas_lease_frees_within_the_lease(pg_database: str, redis_prefix: str) -> None:
    backend = Backend("shared", pg_database, REDIS_URL, redis_prefix + "-dead-" + secrets.token_hex(2))
    async with counting_worker(SimConfig(worker_id="slow", time_scale=1.0, slow_start_s=5.0)) as (url, worker), \
            replica_process(backend, url, LEASE_S) as (doomed_url, pid):
        survivor = await serve_gateway(gateway_settings(backend, [url], limits_lease_s=LEASE_S))
        try:
            async with aiohttp.ClientSession() as http:
                org, _ = await org_with_plan(http, survivor.url, "dead-" + secrets.token_hex(3), concurrency=1)
                key = (await new_key(http, survivor.url, org))["key"]
                long_call = asyncio.create_task(complete(http, doomed_url, key, chat(max_tokens=2)))
                await _in_flight(worker, 1)
                await asyncio.sleep(LEASE_S * 1.5)  # the living replica renews its lease meanwhile
                worker.app.set_faults(slow_start_s=0.0)
                assert (await complete(http, survivor.url, key))[0] == 429
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError):
                    await long_call
                while (status := (await complete(http, survivor.url, key))[0]) == 429:
                    assert time.monotonic() - killed < LEASE_S + 1.0, "the dead replica's lease outlived it"
                    await asyncio.sleep(0.05)
                assert status == 200
        finally:
            await survivor.stop()


async def test_a_request_longer_than_the_lease_keeps_its_slot(pg_database: str) -> None:
    async with private_redis() as redis_server, \
            counting_worker(SimConfig(worker_id="slow", time_scale=1.0, slow_start_s=4.0)) as (url, worker):
        backend = Backend("shared", pg_database, redis_server.url, "gwtest-renew-" + secrets.token_hex(3))
        gw = await serve_gateway(gateway_settings(backend, [url], limits_lease_s=LEASE_S, metering_enabled=False))
        try:
            async with aiohttp.ClientSession() as http:
                org, _ = await org_with_plan(http, gw.url, "renew-" + secrets.token_hex(3), concurrency=3)
                key = (await new_key(http, gw.url, org))["key"]
                calls = [asyncio.create_task(complete(http, gw.url, key, chat(max_tokens=2))) for _ in range(3)]
                await _in_flight(worker, 3)
                stats = gw.app.runtime.limiter.stats
                before, trips = await redis_server.commandstats(), stats.lease_renewal_trips
                await asyncio.sleep(LEASE_S * 2.5)  # long past the lease: only the renewals hold the slots
                after, trips_after = await redis_server.commandstats(), stats.lease_renewal_trips
                worker.app.set_faults(slow_start_s=0.0)
                status, body, _ = await complete(http, gw.url, key)
                assert status == 429 and "concurrent requests" in body["error"]["message"], body
                # One script call a tick for the three leases (they share the organisation's lease set).
                assert trips_after - trips >= 4
                assert after.get("evalsha", 0) - before.get("evalsha", 0) == trips_after - trips
                assert stats.leases_renewed >= 3 * (trips_after - trips)
                assert [(await c)[0] for c in calls] == [200, 200, 200]
                assert (await complete(http, gw.url, key))[0] == 200
        finally:
            await gw.stop()
