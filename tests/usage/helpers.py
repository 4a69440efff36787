"""Helpers for the usage tests: an organisation with a key, traffic through the gateway, and waiting until
the hourly rollups hold it (the ledger writer works in the background)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import openai

from gateway.services.keys import KeyLimits
from tests.conftest import ADMIN_KEY, MODEL, ServedGateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def org_with_key(served: ServedGateway, name: str = "k", **limits: int) -> tuple[str, str, str]:
    """``(org_id, key_id, key)`` of a fresh organisation."""
    rt = served.app.runtime
    org = await rt.keys.create_org("usage-" + secrets.token_hex(4))
    created = await rt.keys.create_key(org.id, name, limits=KeyLimits(**limits) if limits else None)
    return org.id, created.view.id, created.key


async def chat(served: ServedGateway, key: str, n: int, *, user: str | None = None, stream: bool = False) -> int:
    """Send ``n`` chat requests with the openai SDK; returns the output tokens the SDK saw."""
    client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0, timeout=20)
    extra: dict[str, Any] = {"user": user} if user else {}
    output = 0
    try:
        for i in range(n):
            messages = [{"role": "user", "content": f"write a parser number {i} " * 8}]
            if stream:
                chunks = [c async for c in await client.chat.completions.create(
                    model=MODEL, messages=messages, max_tokens=8, stream=True,  # type: ignore[arg-type]
                    stream_options={"include_usage": True}, **extra)]
                usage = chunks[-1].usage
            else:
                usage = (await client.chat.completions.create(
                    model=MODEL, messages=messages, max_tokens=8, **extra)).usage  # type: ignore[arg-type]
            assert usage is not None
            output += usage.completion_tokens
    finally:
        await client.close()
    return output


async def get(served: ServedGateway, path: str, key: str, **params: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, \
            http.get(served.url + path, params=params, headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, await resp.json()


async def wait_for_requests(served: ServedGateway, key: str, requests: int, rate_limited: int = 0) -> dict[str, Any]:
    """The caller's usage once the rollups count ``requests`` (and ``rate_limited``) requests."""
    body: dict[str, Any] = {}
    for _ in range(200):
        await served.app.runtime.billing.flush()
        status, body = await get(served, "/v1/usage", key)
        assert status == 200, body
        if body["totals"]["requests"] >= requests and body["totals"]["rate_limited"] >= rate_limited:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"the rollups never reached {requests} requests: {body.get('totals')}")
