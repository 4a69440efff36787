"""Injected faults and client disconnects."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.workersim.conftest import MODEL, MakeSim, chat, post


async def _eventually(condition: object, within: float = 2.0) -> bool:
    assert callable(condition)
    for _ in range(int(within / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return bool(condition())


async def test_error_rate_one_answers_500(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(error_rate=1.0)
    for stream in (False, True):
        status, body = await post(http, sim.url + "/v1/chat/completions", chat("x", stream=stream))
        assert status == 500
        assert body["error"]["code"] == 500 and body["error"]["type"] == "InternalServerError"
    assert sim.app.stats.errors_injected == 2
    assert len(sim.app.recent_requests) == 2  # received, then failed


async def test_faults_change_at_runtime(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    assert (await post(http, sim.url + "/v1/chat/completions", chat("x")))[0] == 200
    status, faults = await post(http, sim.url + "/sim/faults", {"error_rate": 1.0})
    assert status == 200 and faults["error_rate"] == 1.0
    assert (await post(http, sim.url + "/v1/chat/completions", chat("x")))[0] == 500
    assert (await post(http, sim.url + "/sim/faults", {"error_rate": 2}))[0] == 400
    sim.app.set_faults(error_rate=0.0)
    assert (await post(http, sim.url + "/v1/chat/completions", chat("x")))[0] == 200


async def test_error_rate_is_a_seeded_fraction(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(error_rate=0.5, seed=42)
    statuses = [(await post(http, sim.url + "/v1/chat/completions", chat("x", max_tokens=1)))[0]
                for _ in range(40)]
    assert set(statuses) == {200, 500}
    assert 8 <= statuses.count(500) <= 32


@pytest.mark.parametrize("time_scale", [0.0, 0.01])
async def test_drop_cuts_the_stream_without_done(make_sim: MakeSim, http: aiohttp.ClientSession,
                                                 time_scale: float) -> None:
    sim = await make_sim(drop_rate=1.0, time_scale=time_scale, decode_tokens_per_s=1000.0)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(sim.url + "/v1/chat/completions", json=chat("x", max_tokens=10, stream=True)) as resp:
            assert resp.status == 200
            async for line in resp.content:
                received += line
    assert b'"delta":{"content"' in received  # some tokens came
    assert b"[DONE]" not in received and b"finish_reason\":\"length" not in received
    assert sim.app.stats.streams_dropped == 1
    # Non-streaming requests are not cut.
    assert (await post(http, sim.url + "/v1/chat/completions", chat("x", max_tokens=2)))[0] == 200


async def test_disconnect_mid_stream_cancels(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(time_scale=1.0, decode_tokens_per_s=50.0)  # 500 tokens: 10 s
    resp = await http.post(sim.url + "/v1/chat/completions", json=chat("long", max_tokens=500, stream=True))
    assert resp.status == 200
    await resp.content.readline()
    resp.close()
    assert await _eventually(lambda: sim.app.stats.cancelled == 1)
    assert await _eventually(lambda: sim.app.engine.running == 0)
    assert sim.app.cache.usage == 0.0
    assert sim.app.stats.generation_tokens_total < 500
    async with http.get(sim.url + "/metrics") as metrics:
        assert f'sim:requests_cancelled_total{{model_name="{MODEL}"}} 1' in await metrics.text()


async def test_disconnect_while_queued_or_prefilling_cancels(make_sim: MakeSim,
                                                             http: aiohttp.ClientSession) -> None:
    sim = await make_sim(time_scale=1.0, max_running=1, decode_tokens_per_s=50.0, slow_start_s=5.0)
    # The first request holds the only slot (5 s of slow start); the second waits in the queue.
    first = asyncio.ensure_future(http.post(sim.url + "/v1/completions",
                                            json={"model": MODEL, "prompt": "a", "max_tokens": 2}))
    second = asyncio.ensure_future(http.post(sim.url + "/v1/completions",
                                             json={"model": MODEL, "prompt": "b", "max_tokens": 2}))
    assert await _eventually(lambda: sim.app.engine.waiting == 1)
    second.cancel()
    assert await _eventually(lambda: sim.app.stats.cancelled == 1)
    assert sim.app.engine.waiting == 0 and sim.app.engine.running == 1
    first.cancel()
    assert await _eventually(lambda: sim.app.stats.cancelled == 2)
    assert sim.app.engine.running == 0
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
