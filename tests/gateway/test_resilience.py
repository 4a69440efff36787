"""Worker failures and client disconnects: retry before the first byte, never after; cancel promptly."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig


async def _key(served: Any) -> str:
    rt = served.app.runtime
    org = await rt.keys.get_or_create_org("resilience")
    return (await rt.keys.create_key(org.id, "k")).key


async def test_worker_failing_before_first_byte_is_retried_elsewhere(backend: Backend) -> None:
    bad = await start_sim_server(SimConfig(worker_id="bad", time_scale=0.0, error_rate=1.0))
    good = await start_sim_server(SimConfig(worker_id="good", time_scale=0.0))
    served = await serve_gateway(gateway_settings(backend, [bad.url, good.url]))
    try:
        client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=await _key(served), max_retries=0)
        # Four conversations (one conversation would stay on its worker: routing infers sessions).
        for i, stream in enumerate((False, True, False, True)):
            messages = [{"role": "user", "content": f"hi {i}"}]
            if stream:
                chunks = [c async for c in await client.chat.completions.create(
                    model=MODEL, messages=messages, max_tokens=2, stream=True)]
                assert chunks
            else:
                r = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
                assert r.choices[0].message.content
        assert len(bad.app.recent_requests) >= 1, "the failing worker was never tried"
        await client.close()
    finally:
        await served.stop()
        await bad.stop()
        await good.stop()


async def test_unreachable_worker_is_retried_and_taken_out(backend: Backend) -> None:
    good = await start_sim_server(SimConfig(worker_id="good", time_scale=0.0))
    doomed = await start_sim_server(SimConfig(worker_id="doomed", time_scale=0.0))
    served = await serve_gateway(gateway_settings(backend, [doomed.url, good.url], health_interval_s=60))
    try:
        await doomed.stop()  # the gateway still believes it healthy: its next connect fails
        client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=await _key(served), max_retries=0)
        for i in range(4):  # four conversations, spread by load
            r = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"hi {i}"}],
                                                     max_tokens=2)
            assert r.choices[0].message.content
        doomed_worker = next(w for w in served.app.runtime.pool.all() if w.url == doomed.url)
        assert not doomed_worker.healthy
        await client.close()
    finally:
        await served.stop()
        await good.stop()


async def test_stream_cut_by_worker_is_not_retried_and_client_sees_error(backend: Backend) -> None:
    cutter = await start_sim_server(SimConfig(worker_id="cutter", time_scale=0.0, drop_rate=1.0))
    served = await serve_gateway(gateway_settings(backend, [cutter.url]))
    try:
        client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=await _key(served), max_retries=0)
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=20, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        assert len(cutter.app.recent_requests) == 1  # bytes were sent: no second try
        await client.close()
    finally:
        await served.stop()
        await cutter.stop()


async def test_client_disconnect_cancels_the_upstream_request(backend: Backend) -> None:
    slow = await start_sim_server(SimConfig(worker_id="slow", time_scale=1.0, decode_tokens_per_s=50.0))
    served = await serve_gateway(gateway_settings(backend, [slow.url]))
    try:
        key = await _key(served)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "long answer"}], "max_tokens": 500,
                "stream": True}
        async with aiohttp.ClientSession() as http:
            resp = await http.post(served.url + "/v1/chat/completions", json=body, headers={"x-api-key": key})
            assert resp.status == 200
            await resp.content.readline()  # the stream has started
            resp.close()  # the client goes away after ~0.02 s of a 10 s answer
        for _ in range(100):
            if slow.app.stats.cancelled >= 1:
                break
            await asyncio.sleep(0.02)
        assert slow.app.stats.cancelled == 1
        assert served.app.runtime.pool.all()[0].inflight == 0
    finally:
        await served.stop()
        await slow.stop()
