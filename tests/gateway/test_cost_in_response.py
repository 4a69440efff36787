"""Every answer carries what it cost (``usage.cost_in_usd_ticks``), equal to its ledger row's billed cost;
a worker's own 4xx leaves in OpenAI's error shape, with no ledger row."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
import orjson

from tests.billing.test_metering import ledger_rows
from tests.conftest import MODEL, ServedGateway


async def _org_key(gateway: ServedGateway) -> tuple[str, str]:
    rt = gateway.app.runtime
    org = await rt.keys.get_or_create_org("cost-" + secrets.token_hex(3))
    return org.id, (await rt.keys.create_key(org.id, "k")).key


async def test_cost_in_every_answer_equals_the_ledger(gateway: ServedGateway, make_openai: Any) -> None:
    org, key = await _org_key(gateway)
    client = make_openai(key)
    messages = [{"role": "user", "content": "what does this cost? " * 20}]
    chat = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=7)
    stream = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, stream=True,
                                                  stream_options={"include_usage": True})
    final = [c async for c in stream][-1]
    completion = await client.completions.create(model=MODEL, prompt="def cost():", max_tokens=3)
    costs = [getattr(u, "cost_in_usd_ticks", None) for u in (chat.usage, final.usage, completion.usage)]
    assert all(isinstance(c, int) and c > 0 for c in costs), costs
    rows = await ledger_rows(gateway, org, 3)
    assert sorted(r.billed_ticks for r in rows) == sorted(costs)  # type: ignore[type-var]
    by_output = {r.output_tokens: r.billed_ticks for r in rows}
    assert by_output[7] == costs[0] and by_output[5] == costs[1] and by_output[3] == costs[2]


async def test_stream_without_usage_asked_has_no_usage_chunk(gateway: ServedGateway) -> None:
    _, key = await _org_key(gateway)
    body = {"model": MODEL, "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(headers={"x-api-key": key}) as http, \
            http.post(gateway.url + "/v1/chat/completions", json=body) as resp:
        raw = await resp.read()
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert not any(b'"usage":{' in e for e in events)


async def test_a_worker_refusal_is_reshaped_and_not_billed(gateway: ServedGateway) -> None:
    org, key = await _org_key(gateway)
    # The simulator, like vLLM, refuses a tool_choice naming no given tool with its own error body.
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "grep", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "nope"}}}
    async with aiohttp.ClientSession(headers={"x-api-key": key}) as http, \
            http.post(gateway.url + "/v1/chat/completions", json=body) as resp:
        status, answer = resp.status, orjson.loads(await resp.read())
    assert 400 <= status < 500, answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == "invalid_request_error" and "nope" in answer["error"]["message"]
    assert answer["error"]["param"] == "tool_choice"
    rt = gateway.app.runtime
    await rt.billing.flush()
    assert await ledger_rows(gateway, org, 0) == []
