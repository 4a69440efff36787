"""Redis outage (a private redis-server, killed mid-test) and the Redis work per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Backend, gateway_settings, serve_gateway
from tests.limits.helpers import chat, complete, new_key, org_with_plan
from tests.private_redis import private_redis


async def test_outage_fails_open_with_a_local_share_or_closed_with_503(pg_database: str, sims: Any) -> None:
    async with private_redis() as redis_server:
        backend = Backend("shared", pg_database, redis_server.url, "gwtest-outage-" + secrets.token_hex(3))
        gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], replicas=2))
        try:
            async with aiohttp.ClientSession() as http:
                open_org, _ = await org_with_plan(http, gw.url, "open-" + secrets.token_hex(3), rpm=4)
                closed_org, _ = await org_with_plan(http, gw.url, "closed-" + secrets.token_hex(3), rpm=4,
                                                    fail_open=False)
                open_key = (await new_key(http, gw.url, open_org))["key"]
                closed_key = (await new_key(http, gw.url, closed_org))["key"]
                status, _, headers = await complete(http, gw.url, open_key)
                assert status == 200 and headers["x-ratelimit-limit-requests"] == "4"
                assert (await complete(http, gw.url, closed_key))[0] == 200

                redis_server.kill()
                status, body, headers = await complete(http, gw.url, closed_key)
                assert status == 503 and body["error"]["code"] == "rate_limits_unavailable"
                assert headers["retry-after"] == "1"
                # Fail-open: this replica alone holds its share, 4 / 2 replicas = 2 requests.
                results = [await complete(http, gw.url, open_key) for _ in range(3)]
                assert [r[0] for r in results] == [200, 200, 429]
                assert results[0][2]["x-ratelimit-limit-requests"] == "2"
                stats = gw.app.runtime.limiter.stats
                assert stats.refused_unavailable == 1 and stats.local_fallbacks == 3

                # Back on the same port (empty: it kept nothing on disk): the shared limit applies again.
                await redis_server.start()
                status, _, headers = await complete(http, gw.url, open_key)
                assert status == 200 and headers["x-ratelimit-limit-requests"] == "4"
                assert headers["x-ratelimit-remaining-requests"] == "3"
                assert (await complete(http, gw.url, closed_key))[0] == 200
        finally:
            await gw.stop()


async def test_one_script_call_before_the_upstream_call_and_one_after(pg_database: str, sims: Any) -> None:
    async with private_redis() as redis_server:
        backend = Backend("shared", pg_database, redis_server.url, "gwtest-rt-" + secrets.token_hex(3))
        # Metering off: this counts the limiter's own commands (metering adds one script to the settling
        # round trip and the ledger writer's stream reads, counted in tests/billing).
        gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], metering_enabled=False))
        try:
            async with aiohttp.ClientSession() as http:
                rpm_org, _ = await org_with_plan(http, gw.url, "rt-rpm-" + secrets.token_hex(3), rpm=1000)
                all_org, _ = await org_with_plan(http, gw.url, "rt-all-" + secrets.token_hex(3), rpm=1000,
                                                 tpm=1_000_000, tpd=10_000_000, concurrency=10, key_rpm=500)
                rpm_key = (await new_key(http, gw.url, rpm_org))["key"]
                all_key = (await new_key(http, gw.url, all_org))["key"]
                for key in (rpm_key, all_key):  # first use loads the scripts (EVAL after NOSCRIPT)
                    assert (await complete(http, gw.url, key))[0] == 200

                before = await redis_server.commandstats()
                for _ in range(5):
                    assert (await complete(http, gw.url, rpm_key))[0] == 200
                middle = await redis_server.commandstats()
                for _ in range(5):
                    status, _, headers = await complete(http, gw.url, all_key)
                    assert status == 200 and "x-ratelimit-remaining-tokens" in headers
                after = await redis_server.commandstats()
        finally:
            await gw.stop()

    # commandstats also counts what the scripts call inside Redis, and this probe's own HELLO and INFO.
    inside_scripts = {"time", "hmget", "hset", "pexpire", "zremrangebyscore", "zcard", "zadd", "zrem", "set", "zcount",
                      "zscore"}
    # The ledger loops work in the background, on their own connections: not the request path.
    inside_scripts |= {"xreadgroup", "xautoclaim", "xlen", "get", "xgroup|create", "xgroup"}

    def delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        changed = {k: b[k] - a.get(k, 0) for k in b if b[k] != a.get(k, 0)}
        return {k: v for k, v in changed.items() if k not in inside_scripts | {"hello", "info"}}

    # Per request the router adds one script to each round trip: its lookup before the upstream call
    # (pipelined with the reserve: one round trip) and its record after it.
    # Request limits only: reserve + lookup before the call; the router's record after (nothing to settle).
    assert delta(before, middle) == {"evalsha": 5 * 3}
    # Every kind of limit, org and key: still reserve + lookup before the call, settle + record after it.
    assert delta(middle, after) == {"evalsha": 5 * 4}


async def test_settling_survives_a_dropped_redis_connection(pg_database: str, sims: Any) -> None:
    """Redis freezes (SIGSTOP) at the first streamed chunk, and the gateway's connection to it drops
    while the settling waits on it: the settling retries on a fresh connection (answered once Redis
    resumes) instead of settling locally, so the concurrency lease in Redis is released and the key does
    not lock itself out until the lease expires."""
    async with private_redis() as redis_server:
        backend = Backend("shared", pg_database, redis_server.url, "gwtest-leave-" + secrets.token_hex(3))
        gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims]))
        try:
            async with aiohttp.ClientSession() as http:
                org, _ = await org_with_plan(http, gw.url, "leave-" + secrets.token_hex(3), concurrency=1)
                key = (await new_key(http, gw.url, org))["key"]
            lean = gw.app.runtime.state.lean
            loop = asyncio.get_running_loop()

            def drop_connection() -> None:  # what a network blip does to the gateway's side
                if lean._proto is not None and lean._proto.transport is not None:
                    lean._proto.transport.abort()

            def resume() -> None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(redis_server.pid, signal.SIGCONT)

            async def freeze_redis() -> None:
                os.kill(redis_server.pid, signal.SIGSTOP)
                loop.call_later(0.15, drop_connection)
                loop.call_later(0.3, resume)

            statuses = []
            for _ in range(3):
                statuses.append(await _send_with(gw.app, key, orjson.dumps(chat(stream=True)), first=freeze_redis))
            assert statuses == [200, 200, 200]
            assert gw.app.runtime.limiter.stats.local_fallbacks == 0
        finally:
            await gw.stop()


async def _send_with(app: Any, key: str, body: bytes, first: Callable[[], Awaitable[None]]) -> int:
    """One request through the ASGI app, running ``first`` at the first body chunk of the answer."""
    done = asyncio.Event()
    state: dict[str, Any] = {"sent": False, "status": 0, "chunks": 0}

    async def receive() -> dict[str, Any]:
        if not state["sent"]:
            state["sent"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            state["status"] = message["status"]
            return
        state["chunks"] += 1
        if state["chunks"] == 1:
            await first()
        if not message.get("more_body"):
            done.set()

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]}
    await app(scope, receive, send)
    return int(state["status"])


async def _leave_after_answer(app: Any, key: str, body: bytes, at_last_byte: Callable[[], Awaitable[None]]) -> int:
    """One request through the ASGI app whose client disconnects as soon as the answer is complete."""
    answered = asyncio.Event()
    state: dict[str, Any] = {"sent": False, "status": 0}

    async def receive() -> dict[str, Any]:
        if not state["sent"]:
            state["sent"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            state["status"] = message["status"]
        elif not message.get("more_body"):
            await at_last_byte()
            answered.set()

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]}
    await app(scope, receive, send)
    return int(state["status"])


async def test_a_disconnect_after_the_answer_does_not_cancel_the_settling(
        pg_database: str, sims: Any, caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn reports a disconnect as soon as a response is complete; that must not cancel the request
    while it settles in Redis (here frozen for 0.3 s at the last byte): the settling completes before
    the request ends, and the request is recorded as answered, not as a client disconnect."""
    async with private_redis() as redis_server:
        backend = Backend("shared", pg_database, redis_server.url, "gwtest-after-" + secrets.token_hex(3))
        gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims]))
        try:
            async with aiohttp.ClientSession() as http:
                org, _ = await org_with_plan(http, gw.url, "after-" + secrets.token_hex(3), concurrency=1)
                key = (await new_key(http, gw.url, org))["key"]
            loop = asyncio.get_running_loop()

            async def freeze_redis() -> None:
                os.kill(redis_server.pid, signal.SIGSTOP)
                loop.call_later(0.3, os.kill, redis_server.pid, signal.SIGCONT)

            caplog.set_level(logging.INFO, logger="gateway")
            status = await _leave_after_answer(gw.app, key, orjson.dumps(chat()), freeze_redis)
            assert status == 200
            records = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.requests"]
            assert records and records[-1]["status"] == 200 and records[-1]["outcome"] == "ok"
            assert not [r for r in caplog.records if "client disconnected" in r.getMessage()]
        finally:
            await gw.stop()


async def test_a_frozen_redis_does_not_hang_requests(pg_database: str, sims: Any) -> None:
    """Redis stops answering (SIGSTOP) but keeps its connections open: requests fail over to local state
    after GATEWAY_REDIS_TIMEOUT_S instead of waiting forever, and use Redis again once it answers."""
    async with private_redis() as redis_server:
        backend = Backend("shared", pg_database, redis_server.url, "gwtest-frozen-" + secrets.token_hex(3))
        gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], redis_timeout_s=0.3))
        try:
            async with aiohttp.ClientSession() as http:
                org, _ = await org_with_plan(http, gw.url, "frozen-" + secrets.token_hex(3), rpm=1000)
                key = (await new_key(http, gw.url, org))["key"]
                assert (await complete(http, gw.url, key))[0] == 200
                os.kill(redis_server.pid, signal.SIGSTOP)
                try:
                    started = asyncio.get_running_loop().time()
                    status, _, _ = await asyncio.wait_for(complete(http, gw.url, key), timeout=10)
                    waited = asyncio.get_running_loop().time() - started
                finally:
                    os.kill(redis_server.pid, signal.SIGCONT)
                assert status == 200  # fail-open plan: served from this replica's share
                assert waited < 5, f"a frozen Redis held the request for {waited:.1f}s"
                assert gw.app.runtime.limiter is not None and gw.app.runtime.limiter.stats.local_fallbacks >= 1
                before = gw.app.runtime.limiter.stats.local_fallbacks
                assert (await complete(http, gw.url, key))[0] == 200
                assert gw.app.runtime.limiter.stats.local_fallbacks == before  # back on the shared store
        finally:
            await gw.stop()
