"""The post-request round trip survives the server reporting the client gone once the response is
complete (uvicorn does so), which made the disconnect watcher cancel the settling half-way."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import redis.asyncio as aioredis

from gateway.asgi import run_until_disconnect
from gateway.config import Settings
from gateway.front.chat import ChatCompletions
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal
from gateway.proxy.forward import Forwarder
from gateway.proxy.relay import Relay
from gateway.routing.pool import WorkerPool
from gateway.routing.router import PrefixRouter
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.upstream.openai_worker import OpenAIWorkers, make_pool
from gateway.upstream.worker_probe import WorkerProbe
from tests.conftest import MODEL
from tests.routing.conftest import OwnRedis
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig


async def test_settling_is_not_cancelled_by_the_completed_response(own_redis: OwnRedis) -> None:
    await own_redis.start()  # our own server: CLIENT PAUSE must not slow anybody else down
    sim = await start_sim_server(SimConfig(worker_id="s", time_scale=0.0))
    client = aioredis.Redis.from_url(own_redis.url)
    pauser = aioredis.Redis.from_url(own_redis.url)
    keys = KeySpace("gwtest-settle-" + secrets.token_hex(4))
    async with WorkerProbe.build(Settings()) as http:
        pool = WorkerPool(http)
        worker = pool.add(sim.url, "config")
        await pool.check_all()
        local, shared = MemoryState(), RedisState(client)
        router = PrefixRouter(pool, keys, local, shared)
        forwarder = Forwarder(OpenAIWorkers(make_pool(Settings()), Settings()), Relay(1 << 20, 10.0), pool, router,
                              stages=[], state=shared, fallback=local)
        try:
            for i in range(5):
                raw = b'{"model": "%s", "max_tokens": 2, "messages": [{"role": "user", "content": "hi %d"}]}' % (
                    MODEL.encode(), i)
                ex = Exchange(request_id=f"r{i}", principal=Principal("k", "o", "o", "salt", True),
                              request=ChatCompletions().parse(raw), path="/v1/chat/completions", payload=raw)
                complete = asyncio.Event()

                async def send(message: dict[str, Any], complete: asyncio.Event = complete) -> None:
                    if message["type"] == "http.response.start":
                        # a slow settling round trip: Redis holds every other client for a while
                        await pauser.execute_command("CLIENT", "PAUSE", "150")
                    if message["type"] == "http.response.body" and not message.get("more_body"):
                        complete.set()

                async def receive(complete: asyncio.Event = complete) -> dict[str, Any]:
                    await complete.wait()  # what uvicorn answers once the response is complete
                    return {"type": "http.disconnect"}

                await run_until_disconnect(forwarder.forward(ex, send), receive)
            for _ in range(200):
                if router.stats.settled == 5:
                    break
                await asyncio.sleep(0.01)
            assert router.stats.settled == 5
            assert await client.zcard(keys.inflight(MODEL, worker.id)) == 0
        finally:
            found = [k async for k in client.scan_iter(match=f"{keys.prefix}*")]
            if found:
                await client.delete(*found)
            await client.aclose()
            await pauser.aclose()
            await sim.stop()
