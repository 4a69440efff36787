"""The timing model and the scheduler, with real (small) sleeps: only orderings and states are asserted."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.workersim.conftest import MODEL, MakeSim, post, tokens_prompt


async def _time_to_first_chunk(http: aiohttp.ClientSession, url: str, body: dict[str, object]) -> float:
    start = time.perf_counter()
    async with http.post(url, json={**body, "stream": True}) as resp:
        assert resp.status == 200
        await resp.content.readline()
        elapsed = time.perf_counter() - start
        await resp.read()
    return elapsed


async def test_uncached_prompt_has_a_longer_time_to_first_token(make_sim: MakeSim,
                                                                 http: aiohttp.ClientSession) -> None:
    # 4,000 uncached tokens at 20,000 tokens/s: 0.2 s of prefill; the repeat prefills one block.
    sim = await make_sim(time_scale=1.0, prefill_tokens_per_s=20_000.0, decode_tokens_per_s=1000.0)
    url = sim.url + "/v1/completions"
    cold = await _time_to_first_chunk(http, url, tokens_prompt(4000))
    warm = await _time_to_first_chunk(http, url, tokens_prompt(4000))
    assert cold > warm
    assert sim.app.stats.ttft_count == 2


async def test_prefills_share_the_worker(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Two long uncached prompts at once: the second waits for the first one's prefill."""
    sim = await make_sim(time_scale=1.0, prefill_tokens_per_s=40_000.0, decode_tokens_per_s=1000.0)
    url = sim.url + "/v1/completions"
    a, b = await asyncio.gather(_time_to_first_chunk(http, url, tokens_prompt(4000, start=1)),
                                _time_to_first_chunk(http, url, tokens_prompt(4000, start=90_000)))
    alone = await _time_to_first_chunk(http, url, tokens_prompt(4000, start=200_000))
    assert max(a, b) > alone


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(url + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


async def test_max_running_queues_the_rest(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    # Each request decodes 10 tokens at 100 tokens/s (~0.1 s); one runs at a time.
    sim = await make_sim(time_scale=1.0, max_running=1, decode_tokens_per_s=100.0)
    bodies = [{"model": MODEL, "prompt": f"request {i}", "max_tokens": 10} for i in range(3)]
    tasks = [asyncio.ensure_future(post(http, sim.url + "/v1/completions", b)) for b in bodies]
    seen = (0.0, 0.0)
    for _ in range(200):
        seen = (await _metric(http, sim.url, "vllm:num_requests_running"),
                await _metric(http, sim.url, "vllm:num_requests_waiting"))
        if seen == (1.0, 2.0):
            break
        await asyncio.sleep(0.005)
    assert seen == (1.0, 2.0)
    results = await asyncio.gather(*tasks)
    assert [status for status, _ in results] == [200, 200, 200]
    assert await _metric(http, sim.url, "vllm:num_requests_running") == 0
    assert await _metric(http, sim.url, "vllm:num_requests_waiting") == 0


async def test_stream_paces_tokens(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(time_scale=1.0, decode_tokens_per_s=100.0)
    start = time.perf_counter()
    async with http.post(sim.url + "/v1/completions",
                         json={"model": MODEL, "prompt": "x", "max_tokens": 11, "stream": True}) as resp:
        await resp.read()
    assert time.perf_counter() - start >= 0.1 * 0.9  # 10 intervals of 10 ms after the first token


async def test_time_scale_zero_never_sleeps(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    # At the default speeds a 50,000-token answer would take minutes.
    sim = await make_sim(time_scale=0.0, slow_start_s=100.0, prefill_overhead_s=100.0, max_model_len=200_000)
    start = time.perf_counter()
    status, body = await post(http, sim.url + "/v1/completions",
                              {"model": MODEL, "prompt": "x", "max_tokens": 50_000})
    assert status == 200 and body["usage"]["completion_tokens"] == 50_000
    assert time.perf_counter() - start < 10
