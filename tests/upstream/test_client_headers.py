"""Client headers: a documented allow-list reaches the worker (user-agent, the client's request id as
x-client-request-id, the affinity headers and named extras when configured); authorization, x-api-key and
cookies never do. The partner's X-Title / HTTP-Referer are recorded with the usage as the calling app."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import openai
import pytest

from tests.billing.test_metering import ledger_rows
from tests.conftest import MODEL, Backend, ServedGateway, gateway_settings, serve_gateway
from workersim.run import RunningSim, start_sim_server
from workersim.sim_settings import SimConfig


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim_server(SimConfig(worker_id="hdr", time_scale=0.0))
    yield running
    await running.stop()


async def _call(gw: ServedGateway, headers: dict[str, str]) -> tuple[str, str]:
    rt = gw.app.runtime
    org = await rt.keys.get_or_create_org("hdr-" + secrets.token_hex(3))
    key = (await rt.keys.create_key(org.id, "k")).key
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0,
                                  default_headers={**headers, "x-api-key": key}) as client:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    return org.id, key


def _last_chat(sim: RunningSim) -> dict[str, str]:
    return next(h for path, h in reversed(sim.app.recent_headers) if path == "/v1/chat/completions")


CLIENT = {"X-Title": "Coding Agent", "HTTP-Referer": "https://agent.example", "Cookie": "session=s3cr3t",
          "X-Request-Id": "client-req-1", "X-Session-Id": "conv-1", "X-Custom": "yes"}


async def test_only_the_allow_list_reaches_the_worker(backend: Backend, sim: RunningSim) -> None:
    gw = await serve_gateway(gateway_settings(backend, [sim.url]))
    try:
        org_id, key = await _call(gw, CLIENT)
        seen = _last_chat(sim)
        assert seen["user-agent"].startswith("AsyncOpenAI/Python")
        assert seen["x-client-request-id"] == "client-req-1"
        assert seen["x-request-id"].startswith("req_")  # the gateway's own id names the request at the worker
        for never in ("authorization", "x-api-key", "cookie", "x-title", "http-referer", "x-session-id", "x-custom"):
            assert never not in seen, never
        assert all(key not in v for v in seen.values())
        rows = await ledger_rows(gw, org_id, 1)
        assert [r.app for r in rows] == ["Coding Agent"]  # X-Title first, as OpenRouter reads it
    finally:
        await gw.stop()


async def test_configured_extras_and_affinity_headers(backend: Backend, sim: RunningSim) -> None:
    gw = await serve_gateway(gateway_settings(backend, [sim.url], upstream_forward_affinity_headers=True,
                                              upstream_forward_headers=["X-Custom", "Authorization", "Cookie"]))
    try:
        referer_only = {k: v for k, v in CLIENT.items() if k != "X-Title"}
        org_id, _ = await _call(gw, referer_only)
        seen = _last_chat(sim)
        assert seen["x-session-id"] == "conv-1" and seen["x-custom"] == "yes"
        assert "authorization" not in seen and "cookie" not in seen  # never, whatever the settings say
        rows = await ledger_rows(gw, org_id, 1)
        assert [r.app for r in rows] == ["https://agent.example"]
    finally:
        await gw.stop()
