"""The simulator's OpenAI / vLLM surface: bodies, streams, reasoning, tool calls, errors, info endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import orjson

from tests.workersim.conftest import MODEL, MakeSim, chat, post, sse_data, sse_json


async def test_chat_completion_body(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(worker_id="w-7")
    async with http.post(sim.url + "/v1/chat/completions", json=chat("Say hello", seed=3)) as resp:
        assert resp.status == 200
        assert resp.headers["x-worker-id"] == "w-7"
        body = await resp.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == MODEL and isinstance(body["created"], int)
    assert body["system_fingerprint"] == "w-7"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"  # no max_tokens: the model "stops" after max_tokens_default
    usage = body["usage"]
    assert usage["completion_tokens"] == 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + 16
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert "completion_tokens_details" not in usage
    assert sim.app.recent_requests[-1]["seed"] == 3


async def test_max_tokens_sets_the_length(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    for field in ("max_tokens", "max_completion_tokens"):
        _, body = await post(http, sim.url + "/v1/chat/completions", chat("x", **{field: 5}))
        assert body["usage"]["completion_tokens"] == 5
        assert body["choices"][0]["finish_reason"] == "length"
        assert sim.app.tokenizer.count(body["choices"][0]["message"]["content"]) == 5


async def test_completions_body(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    _, body = await post(http, sim.url + "/v1/completions", {"model": MODEL, "prompt": "Once upon", "max_tokens": 3})
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] == "length" and body["choices"][0]["text"]
    assert body["usage"]["prompt_tokens"] == 3  # BOS, "Once", " upon"
    assert body["usage"]["completion_tokens"] == 3


async def test_stream_chunks_and_included_usage(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    request = chat("Stream please", max_tokens=6, stream=True, stream_options={"include_usage": True})
    async with http.post(sim.url + "/v1/chat/completions", json=request) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = sse_json(await resp.text())
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:7]
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in tokens)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:7])
    final, usage_chunk = chunks[7], chunks[8]
    assert final["choices"][0]["finish_reason"] == "length" and final["choices"][0]["delta"] == {}
    assert all("usage" in c and c["usage"] is None for c in chunks[:8])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 6
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 6
    text = "".join(c["choices"][0]["delta"]["content"] for c in tokens)
    _, whole = await post(http, sim.url + "/v1/chat/completions", chat("Stream please", max_tokens=6))
    assert whole["choices"][0]["message"]["content"] == text  # deterministic for a prompt
    assert whole["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # a short prompt: one partial block


async def test_stream_without_usage_option_has_no_usage(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    async with http.post(sim.url + "/v1/completions",
                         json={"model": MODEL, "prompt": "a b c", "max_tokens": 4, "stream": True}) as resp:
        chunks = sse_json(await resp.text())
    assert len(chunks) == 5
    assert all("usage" not in c for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["length"]
    assert all(c["object"] == "text_completion" for c in chunks)


async def test_reasoning_tokens_are_counted_inside_completion_tokens(make_sim: MakeSim,
                                                                     http: aiohttp.ClientSession) -> None:
    sim = await make_sim(reasoning=True, reasoning_tokens=5)
    _, body = await post(http, sim.url + "/v1/chat/completions", chat("Think first", max_tokens=12))
    message = body["choices"][0]["message"]
    assert sim.app.tokenizer.count(message["reasoning_content"]) == 5
    assert sim.app.tokenizer.count(message["content"]) == 7
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}

    request = chat("Think first", max_tokens=12, stream=True, stream_options={"include_usage": True})
    async with http.post(sim.url + "/v1/chat/completions", json=request) as resp:
        chunks = sse_json(await resp.text())
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]][1:-1]
    assert [next(iter(d)) for d in deltas] == ["reasoning_content"] * 5 + ["content"] * 7
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}

    _, off = await post(http, sim.url + "/v1/chat/completions",
                        chat("Think first", max_tokens=4, chat_template_kwargs={"enable_thinking": False}))
    assert "reasoning_content" not in off["choices"][0]["message"]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]},
    },
}


async def test_tool_call_answer(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(tool_call_rate=0.0)
    request = chat("Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required")
    _, body = await post(http, sim.url + "/v1/chat/completions", request)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args["city"], str) and args["days"] == 1
    assert sim.app.recent_requests[-1]["tools"] == [WEATHER_TOOL]

    # Streamed: the id and name first, then the arguments in pieces.
    async with http.post(sim.url + "/v1/chat/completions", json={**request, "stream": True}) as resp:
        chunks = sse_json(await resp.text())
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"]
    assert "".join(c["function"]["arguments"] for c in calls) == call["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    # A named function; "auto" answers with text on a share of turns (never at a tool_call_rate of 0).
    named = chat("x", tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    _, body = await post(http, sim.url + "/v1/chat/completions", named)
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    _, body = await post(http, sim.url + "/v1/chat/completions", chat("x", tools=[WEATHER_TOOL]))
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["message"]["content"]


async def test_tool_round_trip_hits_the_cache(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """An agent turn re-sends the tool call and adds its result: the prompt, the call and the tools hit."""
    sim = await make_sim()
    messages = [{"role": "system", "content": "You call tools. " * 20}, {"role": "user", "content": "Weather?"}]
    first_req = {"model": MODEL, "messages": messages, "tools": [WEATHER_TOOL], "tool_choice": "required"}
    _, first = await post(http, sim.url + "/v1/chat/completions", first_req)
    call = first["choices"][0]["message"]["tool_calls"][0]
    turn2 = [*messages, {"role": "assistant", "content": None, "tool_calls": [call]},
             {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    _, second = await post(http, sim.url + "/v1/chat/completions",
                           {"model": MODEL, "messages": turn2, "tools": [WEATHER_TOOL]})
    sequence = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == sequence // 16 * 16


async def test_content_parts_and_unknown_fields_are_accepted(make_sim: MakeSim,
                                                             http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Look"},
                                                  {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        "response_format": {"type": "json_object"}, "logprobs": False, "seed": 1, "user": "u1",
        "temperature": 0.2, "something_new": {"a": 1}, "n": 1,
    }
    status, body = await post(http, sim.url + "/v1/chat/completions", request)
    assert status == 200 and body["choices"][0]["message"]["content"]
    assert "something_new" not in orjson.dumps(body).decode()


async def test_errors_have_openai_shape(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(max_model_len=1000)
    url = sim.url + "/v1/chat/completions"
    status, body = await post(http, url, {**chat("x"), "model": "no-such-model"})
    assert status == 404
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == 404 and "no-such-model" in body["error"]["message"]
    async with http.post(url, data=b"{not json", headers={"content-type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == 400
    for bad in (chat("x", n=17), chat("x", max_tokens=0), chat("x", max_tokens="5"), {"model": MODEL},
                {"model": MODEL, "messages": [{"content": "no role"}]}, chat("x", cache_salt=5),
                chat("x", max_tokens=2000), chat("x", tools=[WEATHER_TOOL], tool_choice="bogus")):
        status, body = await post(http, url, bad)
        assert status == 400, bad
        assert body["error"]["type"] == "BadRequestError"
    status, body = await post(http, sim.url + "/v1/completions", {"model": MODEL, "prompt": [1, -2]})
    assert status == 400
    async with http.get(sim.url + "/nope") as resp:
        assert resp.status == 404
    assert sim.app.stats.rejected == 11


async def test_models_health_and_info_endpoints(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(max_running=7, kv_capacity_tokens=16 * 50)
    async with http.get(sim.url + "/v1/models") as resp:
        models = await resp.json()
    assert models["object"] == "list"
    (model,) = models["data"]
    assert model["id"] == MODEL and model["object"] == "model" and model["owned_by"] == "sim"
    assert model["max_model_len"] > 0

    async with http.get(sim.url + "/health") as resp:
        assert resp.status == 200
    sim.app.set_healthy(False)
    async with http.get(sim.url + "/health") as resp:
        assert resp.status == 503
    async with http.post(sim.url + "/sim/health", json={"healthy": True}) as resp:
        assert resp.status == 200
    async with http.get(sim.url + "/health") as resp:
        assert resp.status == 200

    for path in ("/server_info", "/get_server_info"):
        async with http.get(sim.url + path) as resp:
            info = await resp.json()
        assert info["max_running_requests"] == 7 and info["max_total_num_tokens"] == 800
        assert info["served_model_name"] == MODEL
    for path in ("/model_info", "/get_model_info"):
        async with http.get(sim.url + path) as resp:
            info = await resp.json()
        assert info["is_generation"] is True
        folder = Path(info["model_path"])
        assert folder.is_absolute() and folder == Path(info["tokenizer_path"])
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        assert tokenizer["model"]["type"] == "WordLevel" and "[UNK]" in tokenizer["model"]["vocab"]
        assert (folder / "tokenizer_config.json").is_file() and (folder / "config.json").is_file()
    async with http.get(sim.url + "/get_load") as resp:
        assert (await resp.json())[0]["num_reqs"] == 0


async def test_metrics_exposition(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(kv_capacity_tokens=16 * 1000)
    await post(http, sim.url + "/v1/chat/completions", chat("hello " * 40, max_tokens=3))
    await post(http, sim.url + "/v1/chat/completions", chat("hello " * 40, max_tokens=3))
    async with http.get(sim.url + "/metrics") as resp:
        assert resp.headers["content-type"].startswith("text/plain")
        text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            samples[name_labels] = float(value)
    m = f'{{model_name="{MODEL}"}}'
    assert samples[f"vllm:num_requests_running{m}"] == 0
    assert samples[f"vllm:num_requests_waiting{m}"] == 0
    assert samples[f"vllm:kv_cache_usage_perc{m}"] == 0.0
    assert samples[f"vllm:prefix_cache_queries_total{m}"] == sim.app.cache.queries_total > 0
    assert samples[f"vllm:prefix_cache_hits_total{m}"] == sim.app.cache.hits_total > 0
    assert samples['vllm:cache_config_info{block_size="16",enable_prefix_caching="True",num_gpu_blocks="1000"}'] == 1
    assert samples[f"vllm:prompt_tokens_total{m}"] == sim.app.cache.queries_total
    assert samples[f"vllm:generation_tokens_total{m}"] == 6
    assert samples[f'vllm:request_success_total{{finished_reason="length",model_name="{MODEL}"}}'] == 2
    assert samples[f"sim:requests_cancelled_total{m}"] == 0
    assert samples[f"vllm:time_to_first_token_seconds_count{m}"] == 2


async def test_sse_parser_sees_plain_events(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim()
    async with http.post(sim.url + "/v1/completions",
                         json={"model": MODEL, "prompt": "x", "max_tokens": 1, "stream": True}) as resp:
        raw = await resp.text()
    assert raw.endswith("data: [DONE]\n\n")
    assert sse_data(raw)[-1] == "[DONE]"
