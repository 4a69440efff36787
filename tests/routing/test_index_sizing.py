"""With ``routing_bytes_per_token`` 0 the index is sized from the worker's KV tokens x the canonical
bytes per token measured on the responses, so that it holds about as much as the worker does; a fixed
setting (4 by default) pins it. Both backends, real gateways, simulated workers."""

from __future__ import annotations

import random

import aiohttp

from bench.workloads import words
from gateway.routing.prefix import chat_bytes
from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway
from tests.routing.test_routing_gateway import chat, index_size, new_key
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig

KV_TOKENS = 2048
BLOCK_BYTES = 64


def bytes_per_token(system: str, user: str, prompt_tokens: int) -> float:
    body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
    return len(chat_bytes(body)) / prompt_tokens


async def test_the_index_holds_what_the_worker_holds_at_the_measured_bytes_per_token(backend: Backend) -> None:
    sim = await start_sim_server(SimConfig(worker_id="only", time_scale=0.0, kv_capacity_tokens=KV_TOKENS))
    served = await serve_gateway(gateway_settings(backend, [sim.url], routing_block_bytes=BLOCK_BYTES,
                                                  routing_bytes_per_token=0.0))
    try:
        key = await new_key(served)
        router = served.app.runtime.router
        worker = served.app.runtime.pool.all()[0]
        assert router.index_bound(worker) == KV_TOKENS * 4 // BLOCK_BYTES  # the first guess, before any answer
        measured = []
        async with aiohttp.ClientSession() as http:
            rng = random.Random(3)
            system = "agent." + words(rng, 100)  # short words, one simulator token each
            for i in range(40):
                user = f"conversation {i}:" + words(rng, 60)
                _, usage = await chat(http, served, key, user, system=system)
                measured.append(bytes_per_token(system, user, usage["prompt_tokens"]))
        actual = sum(measured) / len(measured)
        assert actual > 4.5  # ~5 canonical bytes per token: 4 undersizes the index
        learnt = router.stats.bytes_per_token
        assert 4.0 + 0.4 * (actual - 4.0) < learnt < actual + 0.01  # it moved most of the way to the truth
        bound = router.index_bound(worker)
        assert bound == int(KV_TOKENS * learnt / BLOCK_BYTES) > KV_TOKENS * 4 // BLOCK_BYTES
        # the worker's traffic overfilled the index: it now keeps more than a 4-bytes-per-token index could
        fixed = KV_TOKENS * 4 // BLOCK_BYTES
        assert fixed + fixed // 16 < await index_size(served, worker.id) <= bound + bound // 16
    finally:
        await served.stop()
        await sim.stop()


async def test_a_fixed_bytes_per_token_pins_the_index_size(backend: Backend) -> None:
    sim = await start_sim_server(SimConfig(worker_id="only", time_scale=0.0, kv_capacity_tokens=KV_TOKENS))
    served = await serve_gateway(gateway_settings(backend, [sim.url], routing_block_bytes=BLOCK_BYTES,
                                                  routing_bytes_per_token=3.0))
    try:
        key = await new_key(served)
        router = served.app.runtime.router
        worker = served.app.runtime.pool.all()[0]
        async with aiohttp.ClientSession() as http:
            for i in range(10):
                await chat(http, served, key, f"conversation {i}: " + "read the file and fix it. " * 8)
        assert router.stats.bytes_per_token == 3.0
        assert router.index_bound(worker) == KV_TOKENS * 3 // BLOCK_BYTES
        assert MODEL in worker.models
    finally:
        await served.stop()
        await sim.stop()
