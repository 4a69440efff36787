"""Redis stopped mid-test: a throwaway redis-server of this test's own (the machine's shared Redis is
never touched). The gateway keeps serving on its local index and returns to the shared one."""

from __future__ import annotations

import aiohttp
import redis.asyncio as aioredis

from tests.conftest import Backend, gateway_settings, serve_gateway
from tests.routing.conftest import OwnRedis
from tests.routing.test_routing_gateway import chat, new_key
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig


async def test_redis_killed_mid_test_keeps_serving_then_comes_back(pg_database: str, own_redis: OwnRedis) -> None:
    await own_redis.start()
    sims = [await start_sim_server(SimConfig(worker_id=f"s{i}", time_scale=0.0, seed=i)) for i in range(2)]
    backend = Backend("shared", pg_database, own_redis.url, "gwtest-outage")
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_block_bytes=64))
    try:
        rt = served.app.runtime
        assert rt.redis is not None
        router = rt.router
        key = await new_key(served)
        async with aiohttp.ClientSession() as http:
            home, _ = await chat(http, served, key, "first")
            assert (await chat(http, served, key, "second"))[0] == home
            assert await rt.redis.keys(rt.keyspace.routing_prefix() + "*")
            assert router.stats.local_fallbacks == 0 and not router.stats.degraded

            own_redis.kill()
            local_home, _ = await chat(http, served, key, "third")  # served, on the local index
            assert router.stats.degraded and router.stats.local_fallbacks == 1
            for i in range(3):  # the local index learns and keeps the prefix together
                assert (await chat(http, served, key, f"more {i}"))[0] == local_home
            assert router.stats.local_fallbacks == 4 and router.stats.prefix_hits >= 4

            await own_redis.start()  # a fresh, empty Redis on the same port
            for i in range(5):  # a pooled connection from before the outage may fail once more
                await chat(http, served, key, f"back {i}")
                if not router.stats.degraded:
                    break
            assert not router.stats.degraded
            fresh = aioredis.Redis.from_url(own_redis.url)
            try:  # the shared index again
                assert await fresh.keys(rt.keyspace.routing_prefix() + "*")
            finally:
                await fresh.aclose()
            local_keys = rt.local_state.keys()
            assert not [k for k in local_keys if k.startswith(rt.keyspace.routing_prefix())]
    finally:
        await served.stop()
        for s in sims:
            await s.stop()
