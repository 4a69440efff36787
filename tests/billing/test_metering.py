"""Metering through the gateway on both backends: every request lands in the ledger once, priced at
the plan valid when it started; cut streams are counted; spend caps refuse with insufficient_quota."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import openai
import orjson
from sqlalchemy import select

from billing.ledger.ledger_tables import UsageRow
from billing.money import REFERENCE_RATES, Tokens, cost
from tests.conftest import ADMIN_KEY, MODEL, Backend, ServedGateway, gateway_settings, serve_gateway
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _org_key(served: ServedGateway) -> tuple[str, str, str]:
    rt = served.app.runtime
    org = await rt.keys.create_org("bill-" + secrets.token_hex(4))
    created = await rt.keys.create_key(org.id, "k")
    return org.id, created.view.id, created.key


async def ledger_rows(served: ServedGateway, org_id: str, expected: int) -> list[UsageRow]:
    """The organisation's ledger rows once ``expected`` arrived (the writer works in the background)."""
    rt = served.app.runtime
    rows: list[UsageRow] = []
    for _ in range(200):
        await rt.billing.flush()
        async with rt.sessions() as s:
            rows = list((await s.execute(select(UsageRow).where(UsageRow.org_id == org_id)
                                         .order_by(UsageRow.started_at))).scalars())
        if len(rows) >= expected:
            break
        await asyncio.sleep(0.05)
    return rows


def _priced(usage: Any) -> int:
    details = usage.prompt_tokens_details
    cached = details.cached_tokens if details else 0
    return cost(Tokens(usage.prompt_tokens, cached, usage.completion_tokens), REFERENCE_RATES)


async def test_every_request_is_metered_once_streaming_or_not(gateway: ServedGateway) -> None:
    org, key_id, key = await _org_key(gateway)
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "write a sorting function " * 20}]
    whole = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, user="dev-42")
    plain = [c async for c in await client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, stream=True)]
    assert all(c.usage is None for c in plain)  # the usage the gateway asked for is not shown
    with_usage = [c async for c in await client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True})]
    streamed_usage = with_usage[-1].usage
    assert streamed_usage is not None
    await client.close()

    rows = await ledger_rows(gateway, org, 3)
    assert len(rows) == 3
    assert all(r.key_id == key_id and r.reported and r.status == "ok" and r.plan == "list" for r in rows)
    assert all(r.model == MODEL for r in rows)
    assert {r.worker for r in rows} <= {w.id for w in gateway.app.runtime.pool.all()}
    assert [r.stream for r in rows] == [False, True, True]
    assert whole.usage is not None and rows[0].output_tokens == whole.usage.completion_tokens
    assert rows[0].billed_ticks == rows[0].list_ticks == _priced(whole.usage)
    assert rows[0].end_user == "dev-42"
    assert rows[2].prompt_tokens == streamed_usage.prompt_tokens
    assert rows[2].billed_ticks == _priced(streamed_usage)
    assert rows[1].output_tokens == sum(1 for c in plain if c.choices and c.choices[0].delta.content)


async def test_reasoning_tokens_inside_completion_are_billed_once(backend: Backend) -> None:
    sim = await start_sim_server(SimConfig(worker_id="thinker", time_scale=0.0, reasoning=True, reasoning_tokens=8))
    served = await serve_gateway(gateway_settings(backend, [sim.url]))
    try:
        org, _, key = await _org_key(served)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(served.url + "/v1/chat/completions", headers={"x-api-key": key},
                                   json={"model": MODEL, "max_tokens": 20,
                                         "messages": [{"role": "user", "content": "think about it"}]})
            usage = (await resp.json())["usage"]
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 8
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]  # vLLM: inside
        (row,) = await ledger_rows(served, org, 1)
        assert (row.output_tokens, row.reasoning_tokens) == (usage["completion_tokens"], 8)
    finally:
        await served.stop()
        await sim.stop()


async def test_a_cut_stream_is_billed_by_count_and_marked_counted(backend: Backend) -> None:
    cutter = await start_sim_server(SimConfig(worker_id="cutter", time_scale=0.0, drop_rate=1.0))
    served = await serve_gateway(gateway_settings(backend, [cutter.url]))
    try:
        org, _, key = await _org_key(served)
        pieces = 0
        async with aiohttp.ClientSession() as http:
            resp = await http.post(served.url + "/v1/chat/completions", headers={"x-api-key": key},
                                   json={"model": MODEL, "max_tokens": 40, "stream": True,
                                         "messages": [{"role": "user", "content": "x" * 400}]})
            async for line in resp.content:
                if line.startswith(b"data: {") and b'"choices"' in line:
                    delta = orjson.loads(line[6:])["choices"][0]["delta"]
                    pieces += 1 if delta.get("content") else 0
        assert pieces > 0
        (row,) = await ledger_rows(served, org, 1)
        assert (row.reported, row.status) == (False, "upstream_cut")
        assert row.output_tokens == pieces
        assert row.prompt_tokens == 104  # estimated: 400 characters / 4 + one message
        assert row.billed_ticks == 104 * 2_000 + pieces * 15_000
    finally:
        await served.stop()
        await cutter.stop()


async def test_a_free_plan_meters_at_list_value_and_bills_zero(gateway: ServedGateway) -> None:
    org, _, key = await _org_key(gateway)
    now = datetime.now(UTC)
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.post(f"{gateway.url}/admin/orgs/{org}/price-plans", json={
                "name": "launch-free", "free": True, "starts_at": (now - timedelta(days=1)).isoformat(),
                "ends_at": (now + timedelta(days=1)).isoformat()}) as r:
            assert r.status == 201, await r.text()
            plan_id = (await r.json())["id"]
        async with http.post(f"{gateway.url}/admin/orgs/{org}/price-plans", json={
                "name": "bad", "free": True, "starts_at": now.isoformat(),
                "ends_at": (now - timedelta(days=1)).isoformat()}) as r:
            assert r.status == 400
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        async with http.delete(f"{gateway.url}/admin/price-plans/{plan_id}") as r:
            assert r.status == 200
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        await client.close()
        free, listed = await ledger_rows(gateway, org, 2)
        assert (free.plan, free.billed_ticks) == ("launch-free", 0) and free.list_ticks > 0
        assert (listed.plan, listed.billed_ticks) == ("list", listed.list_ticks)
        async with http.get(f"{gateway.url}/admin/orgs/{org}/usage") as r:
            summary = await r.json()
        assert summary["requests"] == 2 and summary["billed_ticks"] == listed.billed_ticks
        assert summary["list_ticks"] == free.list_ticks + listed.list_ticks


async def test_over_budget_is_429_insufficient_quota_and_overshoot_is_bounded(gateway: ServedGateway) -> None:
    org, key_id, key = await _org_key(gateway)
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.put(f"{gateway.url}/admin/orgs/{org}/budget", json={"monthly_limit_usd": "0.0002"}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["organization"]["monthly_limit_ticks"] == 2_000_000
        async with http.put(f"{gateway.url}/admin/orgs/{org}/budget", json={"monthly_limit_usd": "1e9"}) as r:
            assert r.status == 400
    body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "y" * 40}]}
    # Estimate per request: (14 prompt tokens x 2,000 + 16 x 15,000) = 268,000 ticks; the cap is 2,000,000.
    async with aiohttp.ClientSession(headers={"x-api-key": key}) as http:

        async def one() -> tuple[int, dict[str, Any]]:
            async with http.post(gateway.url + "/v1/chat/completions", json=body) as resp:
                return resp.status, await resp.json()

        first = await asyncio.gather(*(one() for _ in range(12)))
        statuses = [s for s, _ in first]
        refused = [b for s, b in first if s == 429]
        assert statuses.count(200) >= 1 and refused
        assert refused[0]["error"]["type"] == refused[0]["error"]["code"] == "insufficient_quota"
        later = [await one() for _ in range(3)]
        assert all(s == 429 for s, _ in later)
        async with http.post(gateway.url + "/v1/chat/completions", json=body) as resp:
            # Not worth retrying until the budget changes: the official SDKs do not retry it.
            assert resp.status == 429 and resp.headers["x-should-retry"] == "false"
    rows = await ledger_rows(gateway, org, statuses.count(200))
    spent = sum(r.billed_ticks for r in rows)
    assert len(rows) == statuses.count(200)
    assert 2_000_000 <= spent <= 2_000_000 + 268_000  # over by at most one request's worth
    del key_id


async def test_a_key_budget_applies_to_that_key_only(gateway: ServedGateway) -> None:
    org, key_id, key = await _org_key(gateway)
    other = (await gateway.app.runtime.keys.create_key(org, "other")).key
    async with aiohttp.ClientSession(headers=ADMIN) as http, http.put(f"{gateway.url}/admin/orgs/{org}/budget",
                        json={"monthly_limit_ticks": 0, "key_id": key_id}) as r:
        assert r.status == 200
        assert (await r.json())["keys"][0]["key_id"] == key_id
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/chat/completions", json=body, headers={"x-api-key": key}) as r:
            assert r.status == 429
            assert "API key" in (await r.json())["error"]["message"]
        async with http.post(gateway.url + "/v1/chat/completions", json=body, headers={"x-api-key": other}) as r:
            assert r.status == 200


async def test_a_client_that_leaves_mid_stream_is_billed_for_what_was_streamed(backend: Backend) -> None:
    slow = await start_sim_server(SimConfig(worker_id="slow", time_scale=1.0, decode_tokens_per_s=100.0))
    served = await serve_gateway(gateway_settings(backend, [slow.url]))
    try:
        org, _, key = await _org_key(served)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(served.url + "/v1/chat/completions", headers={"x-api-key": key},
                                   json={"model": MODEL, "max_tokens": 400, "stream": True,
                                         "messages": [{"role": "user", "content": "a long answer please"}]})
            seen = 0
            async for line in resp.content:
                if b'"content":"' in line and b'"content":""' not in line:
                    seen += 1
                if seen >= 3:
                    break
            resp.close()
        (row,) = await ledger_rows(served, org, 1)
        assert (row.status, row.reported) == ("client_disconnected", False)
        assert 3 <= row.output_tokens < 400
    finally:
        await served.stop()
        await slow.stop()
