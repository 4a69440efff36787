"""A worker misbehaving never breaks the response: absurd usage, a garbage or oversized body, a hung or
dropped connection each become a clean answer or an OpenAI-shaped 502, and billing stays exact. A
non-streaming request whose client leaves is completed and billed."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.billing.test_metering import ledger_rows
from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway, served
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig

pytestmark = pytest.mark.parametrize("backend", ["embedded"], indirect=True)

_MODELS = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


class BadWorker:
    """An OpenAI-compatible worker that answers chat requests the way ``mode`` says (an outside-world fake)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path in ("/health", "/v1/models", "/metrics"):
            body = _MODELS if path == "/v1/models" else b"ok"
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
            return
        while (await receive()).get("more_body"):
            pass
        self.requests += 1
        mode = self.mode
        if mode == "hang":
            await asyncio.sleep(3)
            return
        if mode == "stream_hang":  # headers at once, then nothing
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await asyncio.sleep(3)
            return
        if mode == "garbage":
            body = b"<html>oops</html>"
        elif mode == "huge":
            body = b'{"pad": "' + b"x" * (3 << 20) + b'"}'
        else:  # absurd usage
            body = (b'{"id":"c","object":"chat.completion","model":"' + MODEL.encode() +
                    b'","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
                    b'"usage":{"prompt_tokens":1000000000000000000000000000000,'
                    b'"completion_tokens":1180591620717411303424,"total_tokens":5}}')
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def bad_worker(mode: str) -> AsyncIterator[tuple[str, BadWorker]]:
    worker = BadWorker(mode)
    async with served(worker) as url:
        yield url, worker


async def _key(gw: Any) -> tuple[str, str]:
    rt = gw.app.runtime
    org = await rt.keys.get_or_create_org("bad-workers-" + secrets.token_hex(3))
    return org.id, (await rt.keys.create_key(org.id, "k")).key


def _chat(stream: bool = False) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5,
            "stream": stream}


async def test_absurd_usage_is_not_billed_as_reported(backend: Backend) -> None:
    async with bad_worker("absurd") as (url, _):
        gw = await serve_gateway(gateway_settings(backend, [url]))
        try:
            org, key = await _key(gw)
            async with aiohttp.ClientSession() as http, \
                    http.post(gw.url + "/v1/chat/completions", json=_chat(), headers={"x-api-key": key}) as resp:
                assert resp.status == 200
                await resp.read()
            await gw.app.runtime.billing.flush()
            (row,) = await ledger_rows(gw, org, 1)
            assert not row.reported and row.prompt_tokens < 100 and row.billed_ticks < 10**9
        finally:
            await gw.stop()


@pytest.mark.parametrize("mode", ["garbage", "huge"])
async def test_a_garbage_or_oversized_body_is_a_502(backend: Backend, mode: str) -> None:
    async with bad_worker(mode) as (url, _):
        gw = await serve_gateway(gateway_settings(backend, [url], upstream_max_response_bytes=1 << 20))
        try:
            _, key = await _key(gw)
            async with aiohttp.ClientSession() as http, \
                    http.post(gw.url + "/v1/chat/completions", json=_chat(), headers={"x-api-key": key}) as resp:
                assert resp.status == 502
                error = (await resp.json())["error"]
                assert error["type"] == "upstream_error" and resp.headers["x-request-id"].startswith("req_")
        finally:
            await gw.stop()


async def test_a_hung_stream_is_retried_on_another_worker_after_the_ttft_timeout(backend: Backend) -> None:
    good = await start_sim_server(SimConfig(worker_id="good", time_scale=0.0))
    async with bad_worker("stream_hang") as (url, hung):
        gw = await serve_gateway(gateway_settings(backend, [url, good.url], upstream_ttft_timeout_s=0.5,
                                                  routing_policy="round_robin"))
        try:
            _, key = await _key(gw)
            async with aiohttp.ClientSession() as http:
                for _ in range(2):  # one of the two lands on the hung worker first
                    async with http.post(gw.url + "/v1/chat/completions", json=_chat(stream=True),
                                         headers={"x-api-key": key}) as resp:
                        assert resp.status == 200
                        assert b"[DONE]" in await resp.read()
            assert hung.requests >= 1
        finally:
            await gw.stop()
            await good.stop()


async def test_a_hung_non_stream_request_times_out_with_a_502(backend: Backend) -> None:
    async with bad_worker("hang") as (url, _):
        gw = await serve_gateway(gateway_settings(backend, [url], upstream_timeout_s=0.5))
        try:
            _, key = await _key(gw)
            async with aiohttp.ClientSession() as http, \
                    http.post(gw.url + "/v1/chat/completions", json=_chat(), headers={"x-api-key": key}) as resp:
                assert resp.status == 502
                assert "in time" in (await resp.json())["error"]["message"]
        finally:
            await gw.stop()


async def test_an_abandoned_non_stream_request_is_completed_and_billed(backend: Backend) -> None:
    slow = await start_sim_server(SimConfig(worker_id="slow", time_scale=1.0, decode_tokens_per_s=50.0))
    gw = await serve_gateway(gateway_settings(backend, [slow.url]))
    try:
        org, key = await _key(gw)
        body = {**_chat(), "max_tokens": 25}  # about half a second of decoding
        async with aiohttp.ClientSession() as http:
            with contextlib.suppress(TimeoutError):
                async with http.post(gw.url + "/v1/chat/completions", json=body, headers={"x-api-key": key},
                                     timeout=aiohttp.ClientTimeout(total=0.1)) as resp:
                    await resp.read()
        (row,) = await ledger_rows(gw, org, 1)
        assert row.status == "client_disconnected" and row.reported and row.output_tokens > 0
        assert slow.app.stats.cancelled == 0
    finally:
        await gw.stop()
        await slow.stop()


async def test_a_model_name_longer_than_the_ledger_holds_is_a_400(backend: Backend, sims: Any) -> None:
    gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims]))
    try:
        _, key = await _key(gw)
        async with aiohttp.ClientSession() as http, \
                http.post(gw.url + "/v1/chat/completions", json={**_chat(), "model": "m" * 201},
                          headers={"x-api-key": key}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "model"
    finally:
        await gw.stop()
