"""The gateway driven the way clients drive it: the official openai SDK, on both backends."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import MODEL

LONG = "Explain how a prefix cache in an inference server avoids recomputing attention keys. " * 30


async def test_chat_non_streaming(make_openai: Any, api_key: str) -> None:
    client = make_openai(api_key)
    r = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}],
                                             max_tokens=5)
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.completion_tokens == 5 and r.usage.prompt_tokens > 0


async def test_repeated_prompt_reports_cached_tokens(make_openai: Any, api_key: str) -> None:
    client = make_openai(api_key)
    messages = [{"role": "system", "content": LONG}, {"role": "user", "content": "go"}]
    first = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    cached = []
    for _ in range(3):  # least in-flight spreads requests; every worker ends up holding the prefix
        r = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
        assert r.usage is not None and r.usage.prompt_tokens_details is not None
        cached.append(r.usage.prompt_tokens_details.cached_tokens or 0)
    assert first.usage is not None
    assert max(cached) > 0
    assert max(cached) <= first.usage.prompt_tokens


async def test_streaming_with_include_usage(make_openai: Any, api_key: str) -> None:
    client = make_openai(api_key)
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], max_tokens=6, stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, chunks = [], None, 0
    async for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert chunks >= 7  # role chunk + 6 tokens (+ finish / usage)
    assert "".join(text)
    assert usage is not None and usage.completion_tokens == 6


async def test_completions_endpoint(make_openai: Any, api_key: str) -> None:
    client = make_openai(api_key)
    r = await client.completions.create(model=MODEL, prompt="def fib(n):", max_tokens=4)
    assert r.choices[0].text and r.usage is not None and r.usage.completion_tokens == 4
    stream = await client.completions.create(model=MODEL, prompt="def fib(n):", max_tokens=4, stream=True)
    pieces = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(pieces)


async def test_tool_call_and_unknown_fields_pass_through(make_openai: Any, api_key: str, sims: Any) -> None:
    client = make_openai(api_key)
    tools = [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
                                                "parameters": {"type": "object",
                                                               "properties": {"path": {"type": "string"}},
                                                               "required": ["path"]}}}]
    r = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "open main.py"}], tools=tools,
        tool_choice={"type": "function", "function": {"name": "read_file"}}, seed=42,
        extra_body={"reasoning_effort": "low", "some_vendor_field": {"x": 1}},
    )
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "read_file"
    seen = [b for s in sims for b in s.app.recent_requests if b.get("seed") == 42]
    assert seen, "the worker never saw the request"
    forwarded = seen[-1]
    assert forwarded["tools"] == tools
    assert forwarded["some_vendor_field"] == {"x": 1} and forwarded["reasoning_effort"] == "low"


async def test_models_list(make_openai: Any, api_key: str) -> None:
    models = await make_openai(api_key).models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_unknown_model_is_404(make_openai: Any, api_key: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await make_openai(api_key).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


async def test_bad_key_is_401(make_openai: Any) -> None:
    with pytest.raises(openai.AuthenticationError):
        await make_openai("sk-gw-0123456789abcdef_wrong").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        await make_openai("not-a-gateway-key").models.list()


async def test_stream_usage_is_metered_but_not_shown_unless_asked(make_openai: Any, api_key: str, sims: Any,
                                                                   gateway: Any) -> None:
    import aiohttp

    body = {"model": MODEL, "messages": [{"role": "user", "content": "count"}], "max_tokens": 3, "stream": True,
            "seed": 7}
    async with aiohttp.ClientSession() as http, http.post(
        gateway.url + "/v1/chat/completions", json=body, headers={"x-api-key": api_key}
    ) as resp:
        text = (await resp.read()).decode()
    assert text.rstrip().endswith("data: [DONE]")
    assert '"usage":{' not in text.replace(" ", "")  # the client did not ask for usage
    forwarded = [b for s in sims for b in s.app.recent_requests if b.get("seed") == 7][-1]
    assert forwarded["stream_options"] == {"include_usage": True}  # the worker was asked for it
