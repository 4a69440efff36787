"""A settling that Redis did not answer in time (a stall) runs locally, and again on Redis once it
answers: the spend-cap reservation and the concurrency lease it took there do not stay open."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from datetime import UTC, datetime

import aiohttp
import redis.asyncio as aioredis

from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway
from tests.limits.helpers import call, new_key, org_with_plan
from tests.private_redis import private_redis
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig


async def test_a_settling_redis_missed_is_applied_once_it_answers(pg_database: str) -> None:
    slow = await start_sim_server(SimConfig(worker_id="slow", time_scale=1.0, decode_tokens_per_s=20.0))
    async with private_redis() as redis_server:
        backend = Backend("shared", pg_database, redis_server.url, "gwtest-later-" + secrets.token_hex(3))
        gw = await serve_gateway(gateway_settings(backend, [slow.url], limits_lease_s=600))
        probe = aioredis.Redis.from_url(redis_server.url)
        try:
            async with aiohttp.ClientSession() as http:
                org, _ = await org_with_plan(http, gw.url, "later-" + secrets.token_hex(3), concurrency=5)
                status, _, _ = await call(http, "PUT", gw.url + f"/admin/orgs/{org}/budget",
                                          json={"monthly_limit_usd": "100"})
                assert status == 200
                key = (await new_key(http, gw.url, org))["key"]
                body = {"model": MODEL, "messages": [{"role": "user", "content": "long"}], "max_tokens": 20,
                        "stream": True}
                async with http.post(gw.url + "/v1/chat/completions", json=body,
                                     headers={"x-api-key": key}) as resp:
                    assert resp.status == 200
                    await resp.content.readline()  # reserved in Redis; the answer takes about a second
                    os.kill(redis_server.pid, signal.SIGSTOP)  # stalled past both settling attempts
                    try:
                        assert b"[DONE]" in await resp.read()
                    finally:
                        await asyncio.sleep(1.0)
                        os.kill(redis_server.pid, signal.SIGCONT)
            rt = gw.app.runtime
            month = datetime.now(UTC).strftime("%Y-%m")
            _, reservations = rt.keyspace.budget(org, month)
            leases = rt.keyspace.limit_leases(org)
            open_ = (1, 1)
            for _ in range(100):
                open_ = (int(await probe.zcard(reservations)), int(await probe.zcard(leases)))
                if open_ == (0, 0):
                    break
                await asyncio.sleep(0.05)
            assert open_ == (0, 0)
        finally:
            await probe.aclose()
            await gw.stop()
            await slow.stop()


