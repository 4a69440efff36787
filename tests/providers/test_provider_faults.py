"""A hosted provider that is down, slow, refuses our key, rate limits, fails or cuts its stream: the client
gets an OpenAI error in the right class (never a 500), a cut stream is billed by what was relayed, and a
failing provider's circuit opens, then lets one probe through after its cooldown."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from providerfake import Fault
from tests.billing.test_metering import ledger_rows
from tests.conftest import MODEL, Backend
from tests.providers.provider_fixtures import fallback_gateway

pytestmark = pytest.mark.parametrize("backend", ["embedded"], indirect=True)

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


async def _post(http: aiohttp.ClientSession, url: str, key: str, **extra: object) -> tuple[int, dict[str, str], dict]:
    async with http.post(url + "/v1/chat/completions", json={**BODY, **extra},
                         headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.json(content_type=None)


async def test_each_fault_is_an_openai_error_in_its_class(backend: Backend) -> None:
    async with fallback_gateway(backend, ("xai",), provider_timeout_s=0.5, provider_breaker_failures=100) as env:
        fake = env.providers[0]
        cases = [
            (Fault(status=401), 502, "bad_gateway", None),
            (Fault(status=429, retry_after="7"), 429, "rate_limit_exceeded", "7"),
            (Fault(status=500), 502, "bad_gateway", None),
            (Fault(status=503, retry_after="3"), 503, "provider_unavailable", "3"),
            (Fault(delay_s=1.5), 504, "gateway_timeout", None),
        ]
        async with aiohttp.ClientSession() as http:
            for fault, status, code, retry_after in cases:
                fake.fault = fault
                got, headers, body = await _post(http, env.gateway.url, env.key)
                assert (got, body["error"]["code"]) == (status, code), (fault, body)
                assert set(body["error"]) == {"message", "type", "param", "code"}
                if retry_after is not None:
                    assert headers.get("retry-after") == retry_after
            fake.fault = Fault(status=400)
            got, _, body = await _post(http, env.gateway.url, env.key)
            assert got == 400 and body["error"]["type"] == "invalid_request_error"  # the client's own mistake
            fake.fault = Fault()
            got, _, body = await _post(http, env.gateway.url, env.key)
            assert got == 200 and body["choices"][0]["message"]["content"] == "w0 w1 w2"
        rows = await ledger_rows(env.gateway, env.org_id, 1)
        assert len(rows) == 1  # failures generated nothing and bill nothing


async def test_a_provider_nobody_listens_on_is_a_502(backend: Backend) -> None:
    async with fallback_gateway(backend, (), down_first=True) as env, aiohttp.ClientSession() as http:
        got, _, body = await _post(http, env.gateway.url, env.key)
        assert got == 502 and body["error"]["type"] == "upstream_error"
        got, _, body = await _post(http, env.gateway.url, env.key, stream=True)
        assert got == 502


async def test_a_cut_stream_is_billed_by_what_was_relayed(backend: Backend) -> None:
    async with fallback_gateway(backend, ("xai",)) as env:
        env.providers[0].fault = Fault(cut_after=3)
        events: list[bytes] = []
        async with aiohttp.ClientSession() as http, http.post(
                env.gateway.url + "/v1/chat/completions", json={**BODY, "max_tokens": 10, "stream": True},
                headers={"Authorization": f"Bearer {env.key}"}) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"data: "):
                    events.append(line.strip())
        assert b'"error"' in events[-1] and b"[DONE]" not in b"".join(events)  # the SDK raises, never a truncated whole
        relayed = sum(1 for e in events if b'"content":"' in e and b'"content":""' not in e)
        assert relayed == 3
        rows = await ledger_rows(env.gateway, env.org_id, 1)
        assert rows[0].status == "upstream_cut" and not rows[0].reported
        assert rows[0].output_tokens == relayed
        stats = env.gateway.app.runtime.providers.stats()
        assert ({"provider": "xai/grok-code-fast-1", "error": "cut"}, 1.0) in stats["gateway_provider_errors_total"]


async def test_the_circuit_opens_then_one_probe_closes_it(backend: Backend) -> None:
    async with fallback_gateway(backend, ("xai",), provider_breaker_failures=2,
                                provider_breaker_cooldown_s=0.3) as env, aiohttp.ClientSession() as http:
        fake = env.providers[0]
        fake.fault = Fault(status=500)
        for _ in range(2):
            assert (await _post(http, env.gateway.url, env.key))[0] == 502
        got, headers, body = await _post(http, env.gateway.url, env.key)
        assert got == 503 and body["error"]["code"] == "provider_unavailable" and "retry-after" in headers
        assert fake.requests == 2  # the open circuit kept the third request off the provider
        fake.fault = Fault()
        await asyncio.sleep(0.35)
        assert (await _post(http, env.gateway.url, env.key))[0] == 200  # the probe
        assert (await _post(http, env.gateway.url, env.key))[0] == 200
        assert fake.requests == 4
        stats = env.gateway.app.runtime.providers.stats()
        assert stats["gateway_provider_circuit_opens_total"] == [({"provider": "xai/grok-code-fast-1"}, 1.0)]
        assert stats["gateway_provider_circuit_open"] == [({"provider": "xai/grok-code-fast-1"}, 0.0)]
