"""Anthropic's Messages API through the gateway, driven by the official ``anthropic`` SDK, on both backends:
create, stream, a tool_use round trip, count_tokens, models, and the SDK's error classes. The workers
speak Chat Completions only (workersim)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from tests.billing.test_metering import ledger_rows
from tests.conftest import MODEL, Backend, ServedGateway, gateway_settings, serve_gateway
from tests.limits.helpers import new_key, org_with_plan
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig

TOOLS: list[Any] = [{"name": "read_file", "description": "Read a file from the repository",
                     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                                      "required": ["path"]}}]


async def _org_key(gateway: ServedGateway) -> tuple[str, str]:
    rt = gateway.app.runtime
    org = await rt.keys.get_or_create_org("claude-" + secrets.token_hex(3))
    return org.id, (await rt.keys.create_key(org.id, "k")).key


@pytest.fixture
async def make_anthropic(gateway: ServedGateway) -> AsyncIterator[Callable[..., anthropic.AsyncAnthropic]]:
    clients: list[anthropic.AsyncAnthropic] = []

    def make(key: str | None = None, **options: Any) -> anthropic.AsyncAnthropic:
        client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20, **options)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


def _seen(sims: Any, marker: str) -> dict[str, Any]:
    """The chat body a worker received for the request whose user field is ``marker``."""
    bodies = [b for s in sims for b in s.app.recent_requests if b.get("user") == marker]
    assert bodies, "no worker saw the request"
    return bodies[-1]  # type: ignore[no-any-return]


async def test_create_answers_a_message_with_disjoint_usage_and_its_cost(gateway: ServedGateway, make_anthropic: Any,
                                                                        sims: Any) -> None:
    org, key = await _org_key(gateway)
    client = make_anthropic(key)
    long = "Explain how a prefix cache avoids recomputing attention keys. " * 30
    system: Any = [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}]
    block = {"type": "text", "text": "go", "cache_control": {"type": "ephemeral"}}
    messages: Any = [{"role": "user", "content": [block]}]
    first = await client.messages.create(model=MODEL, max_tokens=6, system=system, messages=messages,
                                         metadata={"user_id": "u-create"}, stop_sequences=["ZZZ"],
                                         output_config={"effort": "low"}, extra_body={"temperature": 0.2})
    assert first.type == "message" and first.role == "assistant" and first.id.startswith("msg_")
    assert first.content[0].type == "text" and first.content[0].text
    assert first.stop_reason == "max_tokens" and first.usage.output_tokens == 6
    forwarded = _seen(sims, "u-create")
    assert forwarded["messages"][0] == {"role": "system", "content": long}
    assert forwarded["max_tokens"] == 6 and forwarded["stop"] == ["ZZZ"] and forwarded["temperature"] == 0.2
    assert forwarded["reasoning_effort"] == "low"
    # Sent again, the prompt is read from the cache: cached tokens leave input_tokens (disjoint fields).
    answers = [first]
    for _ in range(3):
        answers.append(await client.messages.create(model=MODEL, max_tokens=6, system=system, messages=messages))
    assert all(a.usage.cache_creation_input_tokens == 0 for a in answers)
    total = first.usage.input_tokens + (first.usage.cache_read_input_tokens or 0)
    warm = [a for a in answers if (a.usage.cache_read_input_tokens or 0) > 0]
    assert warm and all(a.usage.input_tokens + (a.usage.cache_read_input_tokens or 0) == total for a in warm)
    rows = await ledger_rows(gateway, org, 4)
    assert len(rows) == 4
    for answer, row in zip(answers, rows, strict=True):
        usage = answer.usage
        assert getattr(usage, "cost_in_usd_ticks", None) == row.billed_ticks > 0
        assert row.prompt_tokens == usage.input_tokens + (usage.cache_read_input_tokens or 0)
        assert row.cached_tokens == (usage.cache_read_input_tokens or 0) and row.output_tokens == usage.output_tokens


async def test_stream_events_and_cost_equal_the_ledger(gateway: ServedGateway, make_anthropic: Any) -> None:
    org, key = await _org_key(gateway)
    client = make_anthropic(key)
    names: list[str] = []
    delta_usage: Any = None
    async with client.messages.stream(model=MODEL, max_tokens=5,
                                      messages=[{"role": "user", "content": "stream please"}]) as stream:
        async for ev in stream:
            names.append(ev.type)
            if ev.type == "message_delta":
                delta_usage = ev.usage
        text = await stream.get_final_text()
        final = await stream.get_final_message()
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_start" in names and "content_block_stop" in names and "message_delta" in names
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 5
    rows = await ledger_rows(gateway, org, 1)
    assert len(rows) == 1 and rows[0].stream and rows[0].output_tokens == 5
    assert final.usage.input_tokens == rows[0].prompt_tokens - rows[0].cached_tokens
    assert getattr(delta_usage, "cost_in_usd_ticks", None) == rows[0].billed_ticks > 0


async def test_raw_stream_has_ping_and_sse_event_names(gateway: ServedGateway) -> None:
    _, key = await _org_key(gateway)
    body = {"model": MODEL, "max_tokens": 3, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(headers={"x-api-key": key, "anthropic-version": "2023-06-01"}) as http, \
            http.post(gateway.url + "/v1/messages", json=body) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        raw = await resp.read()
    events = [e for e in raw.decode().split("\n\n") if e]
    names = [e.split("\n")[0].removeprefix("event: ") for e in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    for e in events:  # every event names itself twice, as Anthropic's do
        name, data = e.split("\n")
        assert orjson.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    assert "[DONE]" not in raw.decode()


async def test_tool_use_round_trip(gateway: ServedGateway, make_anthropic: Any, sims: Any) -> None:
    _, key = await _org_key(gateway)
    client = make_anthropic(key)
    question: Any = {"role": "user", "content": "open main.py"}
    first = await client.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, messages=[question],
                                         tool_choice={"type": "tool", "name": "read_file"})
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "read_file" and isinstance(use.input, dict) and isinstance(use.input.get("path"), str)
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": [{"type": "text", "text": "print('hello')"}]}]}
    second = await client.messages.create(model=MODEL, max_tokens=8, tools=TOOLS, metadata={"user_id": "u-tools"},
                                          messages=[question, {"role": "assistant", "content": first.content},
                                                    result], tool_choice={"type": "auto"})
    # The model may answer or call the tool again (the simulator calls on a share of auto turns).
    assert second.content and second.stop_reason in ("max_tokens", "end_turn", "tool_use")
    assert (second.stop_reason == "tool_use") == any(b.type == "tool_use" for b in second.content)
    forwarded = _seen(sims, "u-tools")["messages"]
    assert forwarded[1]["tool_calls"][0]["id"] == use.id
    assert forwarded[2] == {"role": "tool", "tool_call_id": use.id, "content": "print('hello')"}
    # Streamed, the call's arguments arrive as input_json_delta and the SDK rebuilds the input.
    async with client.messages.stream(model=MODEL, max_tokens=200, tools=TOOLS, messages=[question],
                                      tool_choice={"type": "any"}) as stream:
        deltas = [ev.delta.type async for ev in stream if ev.type == "content_block_delta"]
        final = await stream.get_final_message()
    assert "input_json_delta" in deltas and final.stop_reason == "tool_use"
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert streamed.name == "read_file" and isinstance(streamed.input, dict) and "path" in streamed.input


async def test_count_tokens_and_bearer_auth(gateway: ServedGateway, make_anthropic: Any) -> None:
    org, key = await _org_key(gateway)
    client = make_anthropic(auth_token=key)  # Authorization: Bearer, no x-api-key
    short = await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    long = await client.messages.count_tokens(model=MODEL, system="be brief " * 100, tools=TOOLS,
                                              messages=[{"role": "user", "content": "hi " * 400}])
    assert 0 < short.input_tokens < long.input_tokens
    answer = await client.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}])
    assert answer.content
    assert len(await ledger_rows(gateway, org, 1)) == 1  # the create only: counting is not billed
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.count_tokens(model=MODEL, messages=[])
    # max_tokens is no field of count_tokens: refused as Anthropic refuses it, never silently ignored.
    with pytest.raises(anthropic.BadRequestError) as extra:
        await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                           extra_body={"max_tokens": 100})
    assert extra.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                           "message": "max_tokens: Extra inputs are not permitted"}}
    with pytest.raises(anthropic.AuthenticationError):
        await make_anthropic("sk-wrong").messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])


async def test_error_classes(gateway: ServedGateway, make_anthropic: Any) -> None:
    org, key = await _org_key(gateway)
    hi: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError) as auth:
        await make_anthropic("sk-gw-0123456789abcdef_wrong").messages.create(model=MODEL, max_tokens=2, messages=hi)
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as missing:
        await make_anthropic(key).messages.create(model="no-such-model", max_tokens=2, messages=hi)
    assert missing.value.body == {"type": "error", "error": {"type": "not_found_error",
                                                             "message": missing.value.body["error"]["message"]}}  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as orphan:
        await make_anthropic(key).messages.create(model=MODEL, max_tokens=2, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "ok"}]}])
    assert orphan.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages.0.content.0.tool_use_id" in orphan.value.message
    with pytest.raises(anthropic.NotFoundError):  # an unknown path under /v1/messages, in Anthropic's shape
        await make_anthropic(key).get("/v1/messages/batches/nope", cast_to=object)
    assert await ledger_rows(gateway, org, 0) == []


async def test_rate_limit_error_with_retry_after(gateway: ServedGateway, make_anthropic: Any) -> None:
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, "claude-rpm-" + secrets.token_hex(3), rpm=1)
        key = (await new_key(http, gateway.url, org))["key"]
    client = make_anthropic(key)
    hi: Any = [{"role": "user", "content": "hi"}]
    await client.messages.create(model=MODEL, max_tokens=2, messages=hi)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model=MODEL, max_tokens=2, messages=hi)
    assert limited.value.status_code == 429
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError):  # a stream is refused the same way, before its first event
        async with client.messages.stream(model=MODEL, max_tokens=2, messages=hi) as stream:
            await stream.get_final_message()


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": MODEL, "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": MODEL, "max_tokens": 10**8, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]},
     "messages.0.content.0.type"),
    ({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": 12}]}, "messages.0.content"),
    ({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "tools": {"name": "f"}},
     "tools"),
    ({"model": 5, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}, "model"),
]


async def test_bad_input_is_a_400_in_anthropic_shape_never_billed(gateway: ServedGateway) -> None:
    org, key = await _org_key(gateway)
    async with aiohttp.ClientSession(headers={"x-api-key": key, "anthropic-version": "2023-06-01"}) as http:
        for body, param in BAD_BODIES:
            for stream in (False, True):
                async with http.post(gateway.url + "/v1/messages", json={**body, "stream": stream}) as resp:
                    status, answer = resp.status, orjson.loads(await resp.read())
                assert status == 400, (body, answer)
                assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
                assert answer["error"]["message"].startswith(param + ":"), answer
        async with http.post(gateway.url + "/v1/messages", data=b"{not json") as resp:
            assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_request_error"
        async with http.get(gateway.url + "/v1/messages") as resp:
            assert resp.status == 405 and (await resp.json())["type"] == "error"
    assert await ledger_rows(gateway, org, 0) == []


async def test_models_in_both_shapes(gateway: ServedGateway, make_anthropic: Any, make_openai: Any) -> None:
    _, key = await _org_key(gateway)
    page = await make_anthropic(key).models.list()
    assert [m.id for m in page.data] == [MODEL] and page.data[0].type == "model"
    info = await make_anthropic(key).models.retrieve(MODEL)
    assert info.id == MODEL and info.created_at.year >= 2024
    with pytest.raises(anthropic.NotFoundError):
        await make_anthropic(key).models.retrieve("no-such-model")
    with pytest.raises(anthropic.AuthenticationError):
        await make_anthropic("sk-wrong").models.list()
    model = await make_openai(key).models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError) as missing:
        await make_openai(key).models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http, \
            http.get(gateway.url + "/v1/nothing-here") as resp:
        assert resp.status == 404 and set(await resp.json()) == {"error"}  # OpenAI's shape off the Anthropic routes


async def test_a_worker_refusal_is_reshaped_and_not_billed(gateway: ServedGateway, make_anthropic: Any) -> None:
    org, key = await _org_key(gateway)
    # More output than the worker's context holds: the worker refuses it itself, in its own shape.
    with pytest.raises(anthropic.BadRequestError) as refused:
        await make_anthropic(key).messages.create(model=MODEL, max_tokens=200_000,
                                                  messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "maximum context length" in refused.value.body["error"]["message"]  # type: ignore[index]
    assert await ledger_rows(gateway, org, 0) == []


async def test_a_cut_stream_ends_with_an_error_event_the_sdk_raises(backend: Backend) -> None:
    cutter = await start_sim_server(SimConfig(worker_id="cutter", time_scale=0.0, drop_rate=1.0))
    served = await serve_gateway(gateway_settings(backend, [cutter.url]))
    client = anthropic.AsyncAnthropic(base_url=served.url, api_key="", max_retries=0, timeout=20)
    try:
        org, key = await _org_key(served)
        client = client.with_options(api_key=key)
        texts: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as cut:
            async with client.messages.stream(model=MODEL, max_tokens=40,
                                              messages=[{"role": "user", "content": "x" * 400}]) as stream:
                async for text in stream.text_stream:
                    texts.append(text)
        assert texts, "the first half of the answer came through before the cut"
        assert "interrupted" in str(cut.value.body)
        (row,) = await ledger_rows(served, org, 1)  # billed for what was relayed
        assert row.status == "upstream_cut" and row.output_tokens == len(texts)
    finally:
        await client.close()
        await served.stop()
        await cutter.stop()


async def test_thinking_blocks_from_the_workers_reasoning(backend: Backend) -> None:
    thinker = await start_sim_server(SimConfig(worker_id="thinker", time_scale=0.0, reasoning=True,
                                               reasoning_tokens=4))
    served = await serve_gateway(gateway_settings(backend, [thinker.url]))
    client = anthropic.AsyncAnthropic(base_url=served.url, api_key="", max_retries=0, timeout=20)
    try:
        org, key = await _org_key(served)
        client = client.with_options(api_key=key)
        hi: Any = [{"role": "user", "content": "think first"}]
        thinking: Any = {"type": "enabled", "budget_tokens": 2048}
        whole = await client.messages.create(model=MODEL, max_tokens=10, thinking=thinking, messages=hi)
        assert [b.type for b in whole.content] == ["thinking", "text"]
        assert whole.content[0].thinking  # type: ignore[union-attr]
        assert thinker.app.recent_requests[-1]["reasoning_effort"] == "low"
        async with client.messages.stream(model=MODEL, max_tokens=10, thinking=thinking, messages=hi) as stream:
            deltas = [ev.delta.type async for ev in stream if ev.type == "content_block_delta"]
            final = await stream.get_final_message()
        thought = deltas.count("thinking_delta")
        assert thought > 0 and deltas[:thought] == ["thinking_delta"] * thought and "text_delta" in deltas
        assert [b.type for b in final.content] == ["thinking", "text"]
        # Without thinking asked for, the reasoning is not shown (it is billed as output all the same).
        plain = await client.messages.create(model=MODEL, max_tokens=10, messages=hi)
        assert [b.type for b in plain.content] == ["text"] and plain.usage.output_tokens == 10
        rows = await ledger_rows(served, org, 3)
        assert rows[0].reasoning_tokens == rows[1].reasoning_tokens == thought and rows[2].reasoning_tokens > 0
    finally:
        await client.close()
        await served.stop()
        await thinker.stop()


async def test_a_stop_sequence_ends_the_answer(gateway: ServedGateway, make_anthropic: Any) -> None:
    _, key = await _org_key(gateway)
    client = make_anthropic(key)
    hi: Any = [{"role": "user", "content": "say a few words"}]
    free = await client.messages.create(model=MODEL, max_tokens=12, messages=hi)
    words = free.content[0].text.split()  # type: ignore[union-attr]
    stop = words[len(words) // 2]
    stopped = await client.messages.create(model=MODEL, max_tokens=12, messages=hi, stop_sequences=[stop])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", stop)
    assert stop not in stopped.content[0].text  # type: ignore[union-attr]
    async with client.messages.stream(model=MODEL, max_tokens=12, messages=hi, stop_sequences=[stop]) as stream:
        final = await stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)
