"""Prefix-aware routing through real gateways, on both backends, in front of simulated workers."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from typing import Any

import aiohttp

from tests.conftest import ADMIN_KEY, MODEL, Backend, ServedGateway, gateway_settings, serve_gateway
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig

SYSTEM = "You are a careful coding agent working in a large repository. " * 12  # ~750 bytes, shared


async def new_key(served: ServedGateway, org: str | None = None) -> str:
    rt = served.app.runtime
    view = await rt.keys.get_or_create_org(org or "org-" + secrets.token_hex(3))
    return (await rt.keys.create_key(view.id, "k")).key


async def chat(http: aiohttp.ClientSession, gw: ServedGateway, key: str, user: str, system: str = SYSTEM,
               headers: dict[str, str] | None = None, max_tokens: int = 4) -> tuple[str, dict[str, Any]]:
    """One chat request; returns once the gateway also settled it (in-flight released), as a client's
    next turn would find it."""
    body = {"model": MODEL, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
    stats = gw.app.runtime.router.stats
    before = stats.settled
    async with http.post(gw.url + "/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {key}", **(headers or {})}) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        worker = resp.headers["x-gateway-worker"]
    await settled(gw, before + 1)
    return worker, data["usage"]


async def settled(served: ServedGateway, count: int) -> None:
    """Wait until ``count`` requests were settled (that happens just after the response is sent)."""
    stats = served.app.runtime.router.stats
    for _ in range(500):
        if stats.settled >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {stats.settled} of {count} requests settled")


async def index_size(served: ServedGateway, worker_id: str) -> int:
    rt = served.app.runtime
    key = rt.keyspace.prefix_index(MODEL, worker_id)
    if rt.redis is not None:
        return int(await rt.redis.zcard(key))
    return len(rt.local_state.zset(key))


async def test_same_prefix_lands_on_the_same_worker_through_either_replica(backend: Backend) -> None:
    sims = [await start_sim_server(SimConfig(worker_id=f"s{i}", time_scale=0.0, seed=i)) for i in range(3)]
    urls = [s.url for s in sims]
    first = await serve_gateway(gateway_settings(backend, urls, routing_block_bytes=64))
    # embedded state is per process: one replica there; two sharing Redis on the shared backend
    second = await serve_gateway(gateway_settings(backend, urls, routing_block_bytes=64)) \
        if backend.name == "shared" else first
    try:
        key = await new_key(first)
        async with aiohttp.ClientSession() as http:
            for conv in range(4):
                system = f"conversation {conv}: " + SYSTEM
                history = "read the file and fix the failing test. "
                seen = []
                for turn in range(4):
                    gw = (first, second)[turn % 2]
                    worker, usage = await chat(http, gw, key, history, system=system)
                    seen.append(worker)
                    if turn:
                        assert usage["prompt_tokens_details"]["cached_tokens"] > 0
                    history += f" tool result {turn}: " + "ok " * 40
                assert len(set(seen)) == 1, seen
        await settled(first, 8)
        stats = first.app.runtime.router.stats
        assert stats.prefix_hits > 0 and stats.reported_cached_tokens > 0
    finally:
        if second is not first:
            await second.stop()
        await first.stop()
        for s in sims:
            await s.stop()


async def test_a_hot_shared_prefix_spreads_under_load(backend: Backend) -> None:
    sims = [await start_sim_server(SimConfig(worker_id=f"s{i}", time_scale=1.0, decode_tokens_per_s=100.0, seed=i))
            for i in range(2)]
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_block_bytes=64))
    try:
        key = await new_key(served)
        async with aiohttp.ClientSession() as http:
            home, _ = await chat(http, served, key, "warm up")
            for i in range(3):  # one at a time: the prefix keeps them on its worker
                assert (await chat(http, served, key, f"question {i}"))[0] == home
            burst = await asyncio.gather(*(chat(http, served, key, f"user {i}", max_tokens=10)
                                           for i in range(12)))
        counts = Counter(worker for worker, _ in burst)
        assert len(counts) == 2 and min(counts.values()) >= 3, counts
    finally:
        await served.stop()
        for s in sims:
            await s.stop()


async def test_another_tenant_never_matches(backend: Backend, sims: list[Any]) -> None:
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_block_bytes=64))
    try:
        key_a, key_b = await new_key(served), await new_key(served)
        router = served.app.runtime.router
        async with aiohttp.ClientSession() as http:
            worker_a, _ = await chat(http, served, key_a, "same words")
            again, usage = await chat(http, served, key_a, "same words")
            assert again == worker_a and usage["prompt_tokens_details"]["cached_tokens"] > 0
            await settled(served, 2)
            hits, predicted = router.stats.prefix_hits, router.stats.predicted_cached_tokens
            _, usage_b = await chat(http, served, key_b, "same words")
            await settled(served, 3)
        assert usage_b["prompt_tokens_details"]["cached_tokens"] == 0
        assert router.stats.prefix_hits == hits and router.stats.predicted_cached_tokens == predicted
        salts = {r.get("cache_salt") for s in sims for r in s.app.recent_requests}
        assert len(salts) == 2 and None not in salts  # each tenant's own salt went to the workers
    finally:
        await served.stop()


async def test_affinity_hints_keep_a_conversation_on_its_worker(backend: Backend) -> None:
    sims = [await start_sim_server(SimConfig(worker_id=f"s{i}", time_scale=0.0, seed=i)) for i in range(3)]
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_block_bytes=64))
    try:
        key = await new_key(served)
        async with aiohttp.ClientSession() as http:
            for hint in ("x-grok-conv-id", "x-session-id"):
                for conv in range(3):
                    value = f"{hint}-{conv}-{secrets.token_hex(2)}"
                    # short, unrelated prompts: nothing to match, only the hint binds them
                    seen = {(await chat(http, served, key, f"q{i}", system="s", headers={hint: value}))[0]
                            for i in range(4)}
                    assert len(seen) == 1
        assert served.app.runtime.router.stats.affinity_hits >= 18
    finally:
        await served.stop()
        for s in sims:
            await s.stop()


async def test_feedback_drops_entries_the_worker_no_longer_holds(backend: Backend) -> None:
    sim = await start_sim_server(SimConfig(worker_id="only", time_scale=0.0))
    served = await serve_gateway(gateway_settings(backend, [sim.url], routing_block_bytes=64))
    try:
        key = await new_key(served)
        router = served.app.runtime.router
        worker = served.app.runtime.pool.all()[0]
        assert worker.metrics["kv_tokens"] == SimConfig().kv_capacity_tokens  # scraped cache_config_info
        assert router.index_bound(worker) == SimConfig().kv_capacity_tokens * 4 // 64
        async with aiohttp.ClientSession() as http:
            await chat(http, served, key, "an older conversation", system="older " + SYSTEM)
            await asyncio.sleep(0.01)
            await chat(http, served, key, "hello")
            sim.app.reset()  # the worker lost its cache behind the gateway's back
            _, usage = await chat(http, served, key, "hello")
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0
        assert router.stats.feedback_corrections == 1 and router.stats.stale_entries_dropped > 0
        assert router.stats.predicted_cached_tokens > router.stats.reported_cached_tokens
    finally:
        await served.stop()
        await sim.stop()


async def test_removed_or_restarted_workers_are_forgotten(backend: Backend, sims: list[Any]) -> None:
    served = await serve_gateway(gateway_settings(backend, [sims[0].url], routing_block_bytes=64))
    extra = await start_sim_server(SimConfig(worker_id="extra", time_scale=0.0))
    try:
        rt = served.app.runtime
        key = await new_key(served)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(served.url + "/admin/workers", json={"url": extra.url}, headers=admin) as resp:
                assert resp.status == 201
                extra_id = (await resp.json())["id"]
            for i in range(6):
                await chat(http, served, key, "request", system=f"{i} {SYSTEM}")  # unrelated prompts
            assert await index_size(served, extra_id) > 0
            # a restart (the health check fails, then passes) forgets the configured worker's entries
            config_id = next(w.id for w in rt.pool.all() if w.url == sims[0].url)
            assert await index_size(served, config_id) > 0
            sims[0].app.set_healthy(False)
            for _ in range(200):
                if rt.router.stats.worker_purges >= 1:
                    break
                if not rt.pool.get(config_id).healthy:  # type: ignore[union-attr]
                    sims[0].app.set_healthy(True)
                await asyncio.sleep(0.02)
            await rt.router.drain()
            assert await index_size(served, config_id) == 0
            async with http.delete(served.url + f"/admin/workers/{extra_id}", headers=admin) as resp:
                assert resp.status == 200
            await rt.router.drain()
        assert await index_size(served, extra_id) == 0
        assert rt.router.stats.worker_purges == 2
    finally:
        sims[0].app.set_healthy(True)
        await served.stop()
        await extra.stop()


async def test_every_request_is_settled_and_releases_its_inflight_slot(backend: Backend, sims: list[Any]) -> None:
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_block_bytes=64))
    try:
        key = await new_key(served)
        rt = served.app.runtime
        async with aiohttp.ClientSession() as http:
            for i in range(10):
                body = {"model": MODEL, "max_tokens": 3, "stream": i % 2 == 0,
                        "messages": [{"role": "user", "content": f"{i} {SYSTEM}"}]}
                async with http.post(served.url + "/v1/chat/completions", json=body,
                                     headers={"Authorization": f"Bearer {key}"}) as resp:
                    assert resp.status == 200
                    await resp.read()
        await settled(served, 10)
        for w in rt.pool.all():
            key_name = rt.keyspace.inflight(MODEL, w.id)
            left = await rt.redis.zcard(key_name) if rt.redis is not None else len(rt.local_state.zset(key_name))
            assert left == 0
    finally:
        await served.stop()
