"""Rate limits through the gateway over HTTP, on both backends: headers, 429s, settling, key limits."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import openai
import pytest

from gateway.state.base import MemoryData, Script
from tests.conftest import MODEL
from tests.limits.helpers import call, chat, complete, new_key, org_with_plan


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def test_headers_on_every_response_and_429_on_the_limit(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, _name("rpm"), rpm=3, tpm=100_000)
        key = (await new_key(http, gateway.url, org))["key"]
        remaining = []
        for _ in range(3):
            status, _, headers = await complete(http, gateway.url, key)
            assert status == 200
            assert headers["x-ratelimit-limit-requests"] == "3"
            assert headers["x-ratelimit-limit-tokens"] == "100000"
            assert headers["x-ratelimit-reset-requests"].endswith("s")
            remaining.append(int(headers["x-ratelimit-remaining-requests"]))
            assert 0 < int(headers["x-ratelimit-remaining-tokens"]) < 100_000
        assert remaining == [2, 1, 0]
        status, body, headers = await complete(http, gateway.url, key)
        assert status == 429
        error = body["error"]
        assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
        assert "requests per min (RPM)" in error["message"] and "Please try again in" in error["message"]
        assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) > 0
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-reset-tokens" in headers
        # Streams carry them too, and the OpenAI SDK sees a RateLimitError.
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        await client.close()
    stats = gateway.app.runtime.limiter.stats
    assert stats.refused_requests >= 2


async def test_stream_gets_headers(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, _name("stream"), rpm=10)
        key = (await new_key(http, gateway.url, org))["key"]
        status, raw, headers = await complete(http, gateway.url, key, chat(stream=True))
        assert status == 200 and b"[DONE]" in raw
        assert headers["x-ratelimit-remaining-requests"] == "9"
        assert "x-ratelimit-limit-tokens" not in headers  # no token limit in this plan


async def test_tokens_reserve_the_estimate_and_settle_to_usage(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, _name("tpm"), tpm=3000)
        key = (await new_key(http, gateway.url, org))["key"]
        # No max_tokens: the gateway reserves the prompt estimate + the default (1024) output tokens...
        status, body, headers = await complete(http, gateway.url, key, chat(max_tokens=None))
        assert status == 200
        first_remaining = int(headers["x-ratelimit-remaining-tokens"])
        assert first_remaining <= 3000 - 1024
        used = body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        assert used < 200
        # ...and settles to the real usage, so the next request sees only `used` taken, not the estimate.
        status, _, headers = await complete(http, gateway.url, key, chat(max_tokens=None))
        assert status == 200
        second_remaining = int(headers["x-ratelimit-remaining-tokens"])
        assert second_remaining >= first_remaining - used
        # A request that can never fit is refused as too large, without a retry time.
        status, body, headers = await complete(http, gateway.url, key, chat(max_tokens=5000))
        assert status == 429 and body["error"]["type"] == "tokens"
        assert body["error"]["message"].startswith("Request too large") and "retry-after" not in headers
        # A long answer really uses its tokens (the simulator writes max_tokens of them)...
        status, body, headers = await complete(http, gateway.url, key, chat(max_tokens=1900))
        assert status == 200 and body["usage"]["completion_tokens"] == 1900
        # ...so 1500 more do not fit now: refused with a retry time.
        status, body, headers = await complete(http, gateway.url, key, chat(max_tokens=1500))
        assert status == 429 and body["error"]["type"] == "tokens", body
        assert "tokens per min (TPM)" in body["error"]["message"] and "retry-after" in headers


async def test_key_limit_tighter_than_the_plan(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, _name("keylim"), rpm=100)
        tight = await new_key(http, gateway.url, org, name="end-user-7", rpm=2)
        loose = await new_key(http, gateway.url, org, name="team")
        assert tight["rpm"] == 2
        assert [(await complete(http, gateway.url, tight["key"]))[0] for _ in range(3)] == [200, 200, 429]
        status, body, headers = await complete(http, gateway.url, tight["key"])
        assert f"key {tight['id']}" in body["error"]["message"]
        assert headers["x-ratelimit-limit-requests"] == "2"
        status, _, headers = await complete(http, gateway.url, loose["key"])
        assert status == 200 and headers["x-ratelimit-limit-requests"] == "100"
        assert headers["x-ratelimit-remaining-requests"] == "97"  # the org counted the tight key's two


async def test_plan_per_key_default_and_change_reaches_the_key(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        org, plan = await org_with_plan(http, gateway.url, _name("keydef"), rpm=50, key_rpm=1)
        key = (await new_key(http, gateway.url, org))["key"]
        assert [(await complete(http, gateway.url, key))[0] for _ in range(2)] == [200, 429]
        other = (await new_key(http, gateway.url, org))["key"]
        assert (await complete(http, gateway.url, other))[0] == 200  # each key has its own bucket
        async with http.patch(gateway.url + f"/admin/plans/{plan}", json={"key_rpm": None},
                              headers={"Authorization": "Bearer test-admin-key"}) as resp:
            assert resp.status == 200 and (await resp.json())["key_rpm"] is None


async def test_unlimited_org_has_no_limit_headers(gateway: Any, api_key: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, _, headers = await complete(http, gateway.url, api_key)
        assert status == 200 and not any(h.startswith("x-ratelimit") for h in headers)



async def test_a_request_the_rate_limit_refuses_leaves_no_budget_reservation(gateway: Any) -> None:
    """The spend cap reserves in the same round trip as the rate limit checks: when the limit refuses,
    the reservation must be released too (it used to stay open for the reservation TTL)."""
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, _name("budget-429"), rpm=1)
        status, _, _ = await call(http, "PUT", gateway.url + f"/admin/orgs/{org}/budget",
                                  json={"monthly_limit_usd": "100"})
        assert status == 200
        key = (await new_key(http, gateway.url, org))["key"]
        assert (await complete(http, gateway.url, key))[0] == 200
        for _ in range(3):
            assert (await complete(http, gateway.url, key))[0] == 429
    rt = gateway.app.runtime
    month = datetime.now(UTC).strftime("%Y-%m")
    spend, open_reservations = rt.keyspace.budget(org, month)
    found = await rt.state.run(ZCARD, [open_reservations], [])
    assert int(found) == 0
    reserved = await rt.state.run(HGET, [spend], ["reserved"])
    assert int(reserved or 0) == 0


def _zcard_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    return len(data.zset(keys[0]))


def _hget_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    return data.hash(keys[0]).get(args[0])


ZCARD = Script("test_zcard", "return redis.call('ZCARD', KEYS[1])", _zcard_py)
HGET = Script("test_hget", "return redis.call('HGET', KEYS[1], ARGV[1])", _hget_py)
