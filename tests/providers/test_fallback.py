"""Hosted providers through litellm as the fleet's fallback: answers whole and streamed relayed like a
worker's, metered from the provider's own usage at our price book, with the provider's cost beside it;
providers tried in order; an organisation that forbids it never leaves the fleet."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import aiohttp
import openai
import pytest

from billing.money import Tokens
from tests.billing.test_metering import ledger_rows
from tests.conftest import ADMIN_KEY, MODEL, Backend
from tests.providers.provider_fixtures import fallback_gateway

MESSAGES = [{"role": "user", "content": "write a sorting function in rust " * 4}]


def _billed(gw: object, org_id: str, prompt: int, output: int, reasoning: int, started: datetime) -> int:
    rt = gw.app.runtime  # type: ignore[attr-defined]
    charge = rt.billing.catalog.book.charge(org_id, MODEL, started, Tokens(prompt, 0, output, reasoning))
    return int(charge.billed_ticks)


async def test_fallback_whole_and_streamed_with_zero_ledger_drift(backend: Backend) -> None:
    async with fallback_gateway(backend, ("xai",)) as env:
        client = env.client()
        whole = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=6)
        assert whole.model == MODEL  # the served model, not the provider's name
        assert whole.choices[0].message.content == "w0 w1 w2 w3 w4 w5"
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, stream=True)
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == "w0 w1 w2 w3"
        await client.close()

        fake = env.providers[0]
        assert fake.requests == 2 and fake.bodies[0]["model"] == "grok-code-fast-1"
        assert all(h.get("authorization") == "Bearer sk-fake-provider" for h in fake.headers)
        rows = await ledger_rows(env.gateway, env.org_id, 2)
        assert len(rows) == 2
        for row, usage in zip(rows, fake.reported, strict=True):
            # xAI counts reasoning outside completion_tokens: billed as output exactly once.
            reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
            assert (row.prompt_tokens, row.output_tokens, row.reasoning_tokens) == (
                usage["prompt_tokens"], usage["completion_tokens"] + reasoning, reasoning)
            assert row.reported and row.status == "ok" and row.worker == "provider:xai/grok-code-fast-1"
            assert row.model == MODEL
            assert row.provider_cost_ticks == usage["cost_in_usd_ticks"]  # the provider's own figure, exactly
            started = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
            assert row.billed_ticks == _billed(env.gateway, env.org_id, row.prompt_tokens, row.output_tokens,
                                               row.reasoning_tokens, started)
        # The client sees our price, never the provider's cost.
        assert getattr(whole.usage, "cost_in_usd_ticks", None) == rows[0].billed_ticks != rows[0].provider_cost_ticks
        # Zero drift: what the provider reported is what the ledger holds.
        assert sum(r.prompt_tokens for r in rows) == sum(u["prompt_tokens"] for u in fake.reported)
        assert sum(r.output_tokens for r in rows) == sum(u["total_tokens"] - u["prompt_tokens"] for u in fake.reported)

        async with aiohttp.ClientSession() as http, http.get(env.gateway.url + "/metrics") as resp:
            text = await resp.text()
        assert ('gateway_provider_requests_total{provider="xai/grok-code-fast-1",reason="fallback",result="ok"} 2.0'
                in text)
        latency = 'gateway_provider_request_duration_seconds_count{provider="xai/grok-code-fast-1",reason="fallback"}'
        assert f"{latency} 2.0" in text


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_providers_are_tried_in_order(backend: Backend) -> None:
    async with fallback_gateway(backend, ("openai",), down_first=True) as env:
        client = env.client()
        answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        await client.close()
        assert answer.choices[0].message.content == "w0 w1 w2"
        assert env.providers[0].requests == 1
        rows = await ledger_rows(env.gateway, env.org_id, 1)
        assert rows[0].worker == "provider:openai/fake-model"
        assert rows[0].output_tokens == 3 and rows[0].provider_cost_ticks is None  # litellm has no price for it
        stats = env.gateway.app.runtime.providers.stats()
        errors = {s[0]["provider"]: s[1] for s in stats["gateway_provider_errors_total"]}
        assert errors == {"openai/down-model": 1.0}


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_litellm_writes_no_line_per_request_to_the_gateway_log(
        backend: Backend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # litellm's loggers have no level of their own: under the gateway's INFO root logger each call wrote
    # "LiteLLM completion() model= ..." through litellm's redacting filters (~0.1 ms of CPU a request).
    monkeypatch.delenv("LITELLM_LOG", raising=False)
    caplog.set_level(logging.INFO)
    async with fallback_gateway(backend, ("xai",)) as env:
        client = env.client()
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        await client.close()
        assert env.providers[0].requests == 1
    assert not [r for r in caplog.records if r.name.startswith("LiteLLM") and r.levelno < logging.WARNING]


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_an_organisation_that_forbids_it_never_leaves_the_fleet(backend: Backend) -> None:
    async with fallback_gateway(backend, ("xai",), key_cache_ttl_s=0.01) as env, aiohttp.ClientSession() as http:
        url = f"{env.gateway.url}/admin/orgs/{env.org_id}"
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with http.patch(url, json={"providers_allowed": False}, headers=admin) as resp:
            assert resp.status == 200 and (await resp.json())["providers_allowed"] is False
        async with http.patch(url, json={"providers_allowed": "maybe"}, headers=admin) as resp:
            assert resp.status == 400  # a clear 4xx
        client = env.client()
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        assert getattr(refused.value, "status_code", None) == 503
        assert env.providers[0].requests == 0  # nothing reached the third party
        async with http.patch(url, json={"providers_allowed": None}, headers=admin) as resp:
            assert resp.status == 200 and (await resp.json())["providers_allowed"] is None
        await asyncio.sleep(0.05)  # past the key cache's TTL (10 ms): the last refused request's lookup was cached
        answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        await client.close()
        assert answer.choices[0].message.content == "w0 w1 w2"  # the default: allowed
