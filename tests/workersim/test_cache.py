"""The simulator's prefix cache, seen through its HTTP answers: vLLM's cached-token rule, salts, eviction."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.workersim.conftest import MODEL, MakeSim, chat, post, tokens_prompt


def cached(body: dict[str, object]) -> int:
    usage = body["usage"]
    assert isinstance(usage, dict)
    value = usage["prompt_tokens_details"]["cached_tokens"]
    assert isinstance(value, int)
    return value


async def test_exact_repeat_reports_vllm_cached_tokens(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    url = sim.url + "/v1/completions"
    status, first = await post(http, url, tokens_prompt(640))
    assert status == 200
    assert first["usage"]["prompt_tokens"] == 640 and cached(first) == 0
    _, again = await post(http, url, tokens_prompt(640))
    assert cached(again) == 624  # the last block is recomputed, as in vLLM
    _, longer = await post(http, url, tokens_prompt(700))
    assert cached(longer) == 640  # all 40 blocks of the earlier prompt
    _, shorter = await post(http, url, tokens_prompt(100))
    assert cached(shorter) == 96
    _, other = await post(http, url, tokens_prompt(640, start=5000))
    assert cached(other) == 0


async def test_repeated_chat_prompt_hits_all_but_the_last_block(make_sim: MakeSim,
                                                                 http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    body = chat("Explain prefix caching in a few sentences, please. " * 20)
    _, first = await post(http, sim.url + "/v1/chat/completions", body)
    _, second = await post(http, sim.url + "/v1/chat/completions", body)
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert cached(first) == 0
    assert cached(second) == (prompt_tokens - 1) // 16 * 16 > 0
    metrics_hits = sim.app.cache.hits_total
    assert metrics_hits == cached(second)
    assert sim.app.cache.queries_total == 2 * prompt_tokens


async def test_next_turn_hits_the_previous_answer(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """The answer's blocks are cached too: a conversation re-sending it hits prompt + answer."""
    sim = await make_sim()
    messages = [{"role": "system", "content": "You are terse. " * 30}, {"role": "user", "content": "Hello there"}]
    _, first = await post(http, sim.url + "/v1/chat/completions",
                          {"model": MODEL, "messages": messages, "max_tokens": 40})
    answer = first["choices"][0]["message"]["content"]
    assert sim.app.tokenizer.count(answer) == first["usage"]["completion_tokens"] == 40
    turn2 = [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": "And then?"}]
    _, second = await post(http, sim.url + "/v1/chat/completions", {"model": MODEL, "messages": turn2})
    sequence = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert cached(second) == sequence // 16 * 16


async def test_cache_salt_isolates_tenants(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    url = sim.url + "/v1/completions"
    _, a1 = await post(http, url, tokens_prompt(320, cache_salt="tenant-a"))
    _, b1 = await post(http, url, tokens_prompt(320, cache_salt="tenant-b"))
    _, none1 = await post(http, url, tokens_prompt(320))
    _, a2 = await post(http, url, tokens_prompt(320, cache_salt="tenant-a"))
    assert (cached(a1), cached(b1), cached(none1)) == (0, 0, 0)
    assert cached(a2) == 304
    assert sim.app.recent_requests[-1]["cache_salt"] == "tenant-a"


async def test_tiny_cache_evicts_least_recently_used_tail_first(make_sim: MakeSim,
                                                                http: aiohttp.ClientSession) -> None:
    # 8 blocks of 16 tokens. Each request: a 48-token prompt (3 blocks) and 1 output token.
    sim = await make_sim(kv_capacity_tokens=128)
    url = sim.url + "/v1/completions"
    a, b, c = (tokens_prompt(48, start=s) for s in (1000, 2000, 3000))
    for body in (a, b):
        assert cached((await post(http, url, body))[1]) == 0
    assert sim.app.cache.cached_blocks == 6
    # C needs 4 blocks while it runs: the two least recently used go, A's last blocks (tail first).
    assert cached((await post(http, url, c))[1]) == 0
    assert sim.app.cache.cached_blocks <= 8
    assert sim.app.cache.evictions_total == 2
    assert cached((await post(http, url, a))[1]) == 16  # only A's first block survived
    # Many new prompts push everything older out.
    for start in range(10_000, 20_000, 1000):
        await post(http, url, tokens_prompt(48, start=start))
    assert cached((await post(http, url, b))[1]) == 0
    assert sim.app.cache.cached_blocks <= 8


async def test_reset_forgets_the_cache(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    url = sim.url + "/v1/completions"
    await post(http, url, tokens_prompt(64))
    assert cached((await post(http, url, tokens_prompt(64)))[1]) == 48
    async with http.post(sim.url + "/sim/reset") as resp:
        assert resp.status == 200
    assert cached((await post(http, url, tokens_prompt(64)))[1]) == 0


async def test_kv_usage_counts_running_sequences(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(time_scale=1.0, decode_tokens_per_s=100.0, kv_capacity_tokens=16 * 100)
    task = asyncio.ensure_future(post(http, sim.url + "/v1/completions", tokens_prompt(160, max_tokens=10)))
    for _ in range(100):
        if sim.app.engine.running:
            break
        await asyncio.sleep(0.005)
    # 170 tokens -> 11 blocks of the 100
    assert abs(sim.app.cache.usage - 0.11) < 1e-9
    await task
    assert sim.app.cache.usage == 0.0
