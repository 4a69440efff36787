"""``/v1/responses`` driven by the official openai SDK on both backends: create, stream, chaining by
``previous_response_id``, a function-tool round trip, the stored responses (GET, DELETE, input items,
another organisation's ids), bad input, and a ledger row equal to the chat equivalent's."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.billing.test_metering import ledger_rows
from tests.conftest import MODEL, ServedGateway

TOOLS: list[Any] = [{"type": "function", "name": "read_file", "description": "Read a file",
                     "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                    "required": ["path"]}}]
SYSTEM = "You are a careful coding assistant. " * 20


async def _org_key(gateway: ServedGateway) -> tuple[str, str]:
    rt = gateway.app.runtime
    org = await rt.keys.get_or_create_org("resp-" + secrets.token_hex(3))
    return org.id, (await rt.keys.create_key(org.id, "k")).key


def _seen(sims: Any, marker: str) -> list[dict[str, Any]]:
    """The chat bodies the workers received whose last message contains ``marker``."""
    return [b for s in sims for b in s.app.recent_requests
            if marker in orjson.dumps(b.get("messages", [])[-1:]).decode()]


async def test_create_is_translated_and_billed_like_the_chat_equivalent(gateway: ServedGateway, make_openai: Any,
                                                                        sims: Any) -> None:
    org, key = await _org_key(gateway)
    client = make_openai(key)
    r = await client.responses.create(model=MODEL, input="count the lines of main.py", instructions=SYSTEM,
                                      max_output_tokens=7, temperature=0.2, metadata={"ticket": "42"}, user="dev-1")
    assert r.id.startswith("resp_") and r.status == "incomplete" and r.object == "response"  # 7 tokens, as asked
    assert r.output_text and r.output[-1].type == "message"
    assert r.metadata == {"ticket": "42"} and r.instructions == SYSTEM
    assert r.usage is not None and r.usage.output_tokens == 7 and r.usage.input_tokens > 0
    (sent,) = _seen(sims, "count the lines of main.py")
    assert sent["messages"] == [{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": "count the lines of main.py"}]
    assert sent["max_tokens"] == 7 and sent["temperature"] == 0.2 and sent["user"] == "dev-1"
    chat = await client.chat.completions.create(model=MODEL, messages=sent["messages"], max_tokens=7,
                                                temperature=0.2, user="dev-1")
    responses_row, chat_row = await ledger_rows(gateway, org, 2)
    assert responses_row.request_id.removeprefix("req_") == r.id.removeprefix("resp_")
    same = ("org_id", "key_id", "model", "requested_model", "prompt_tokens", "output_tokens", "reasoning_tokens",
            "plan", "status", "http_status", "stream", "end_user", "reported")
    assert {f: getattr(responses_row, f) for f in same} == {f: getattr(chat_row, f) for f in same}
    assert chat.usage is not None and chat.usage.prompt_tokens == r.usage.input_tokens
    cost = (r.usage.model_extra or {}).get("cost_in_usd_ticks")
    assert cost == responses_row.billed_ticks and cost > 0


async def test_stream_gives_the_sdks_events_and_final_response(gateway: ServedGateway, make_openai: Any) -> None:
    org, key = await _org_key(gateway)
    client = make_openai(key)
    deltas: list[str] = []
    async with client.responses.stream(model=MODEL, input="stream a haiku") as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert len(deltas) > 1 and final.output_text == "".join(deltas) and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == len(deltas)
    (row,) = await ledger_rows(gateway, org, 1)
    assert row.stream and row.output_tokens == len(deltas)
    assert (final.usage.model_extra or {}).get("cost_in_usd_ticks") == row.billed_ticks
    stored = await client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text and stored.usage == final.usage


async def test_chaining_rebuilds_the_conversation_and_hits_the_cache(gateway: ServedGateway, make_openai: Any,
                                                                     sims: Any) -> None:
    _, key = await _org_key(gateway)
    client = make_openai(key)
    first = await client.responses.create(model=MODEL, input="turn one " + SYSTEM, instructions="first rules",
                                          max_output_tokens=5)
    second = await client.responses.create(model=MODEL, input="turn two", previous_response_id=first.id,
                                           max_output_tokens=5)
    third = await client.responses.create(model=MODEL, input="turn three", previous_response_id=second.id,
                                          max_output_tokens=5, stream=False)
    (sent,) = _seen(sims, "turn three")
    assert sent["messages"] == [  # instructions are not carried over
        {"role": "user", "content": "turn one " + SYSTEM}, {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "turn two"}, {"role": "assistant", "content": second.output_text},
        {"role": "user", "content": "turn three"}]
    assert third.previous_response_id == second.id
    assert third.usage is not None and third.usage.input_tokens_details.cached_tokens > 0


async def test_a_function_tool_round_trip(gateway: ServedGateway, make_openai: Any, sims: Any) -> None:
    _, key = await _org_key(gateway)
    client = make_openai(key)
    asked = await client.responses.create(model=MODEL, input="open main.py", tools=TOOLS,
                                          tool_choice={"type": "function", "name": "read_file"})
    calls = [item for item in asked.output if item.type == "function_call"]
    assert calls and calls[0].name == "read_file" and orjson.loads(calls[0].arguments)
    async with client.responses.stream(model=MODEL, previous_response_id=asked.id, tools=TOOLS, input=[
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "print('hello')"}]) as stream:
        answered = await stream.get_final_response()
    # The model may answer or call the tool again (the simulator calls on a share of auto turns).
    assert answered.status == "completed" and answered.output
    again = [item for item in answered.output if item.type == "function_call"]
    assert bool(answered.output_text) != bool(again)
    (sent,) = [b for s in sims for b in s.app.recent_requests if b["messages"][-1].get("role") == "tool"]
    assert sent["messages"][-2]["tool_calls"][0]["id"] == calls[0].call_id
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "print('hello')"}
    # the same round trip streamed: the call arrives as function_call events
    async with client.responses.stream(model=MODEL, input="open util.py", tools=TOOLS,
                                       tool_choice="required") as stream:
        kinds = {event.type async for event in stream}
        streamed = await stream.get_final_response()
    assert {"response.function_call_arguments.delta", "response.function_call_arguments.done"} <= kinds
    assert any(item.type == "function_call" and item.name == "read_file" for item in streamed.output)


async def test_stored_responses_are_private_to_their_organisation(gateway: ServedGateway, make_openai: Any) -> None:
    _, key = await _org_key(gateway)
    _, other_key = await _org_key(gateway)
    mine, other = make_openai(key), make_openai(other_key)
    r = await mine.responses.create(model=MODEL, input=[{"role": "user", "content": "hello"},
                                                        {"role": "user", "content": "again"}], max_output_tokens=3)
    assert (await mine.responses.retrieve(r.id)).output_text == r.output_text
    items = await mine.responses.input_items.list(r.id, order="asc")
    assert [i.content[0].text for i in items.data] == ["hello", "again"]  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.delete(r.id)
    with pytest.raises(openai.BadRequestError) as refused:
        await other.responses.create(model=MODEL, input="hi", previous_response_id=r.id)
    assert refused.value.param == "previous_response_id"  # type: ignore[attr-defined]
    await mine.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        await mine.responses.retrieve(r.id)
    unstored = await mine.responses.create(model=MODEL, input="forget me", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        await mine.responses.retrieve(unstored.id)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL, "input": [{"type": "image_generation_call"}]}, "input[0].type"),
    ({"model": MODEL, "input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
     "input[0].call_id"),
    ({"model": MODEL, "input": "hi", "max_output_tokens": -1}, "max_output_tokens"),
    ({"model": MODEL, "input": "hi", "tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"model": MODEL, "input": "hi", "previous_response_id": "resp_unknown"}, "previous_response_id"),
    ({"model": MODEL, "input": {"text": "hi"}}, "input"),
    ({"input": "hi"}, "model"),
])
async def test_bad_input_is_a_400_naming_the_param_and_no_ledger_row(gateway: ServedGateway, body: dict[str, Any],
                                                                    param: str) -> None:
    org, key = await _org_key(gateway)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http, \
            http.post(gateway.url + "/v1/responses", json=body) as resp:
        status, answer = resp.status, orjson.loads(await resp.read())
    assert status == 400, answer
    assert answer["error"]["param"] == param and answer["error"]["type"] == "invalid_request_error"
    assert await ledger_rows(gateway, org, 0) == []
