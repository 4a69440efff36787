"""Test plumbing for the limiter: a worker that counts requests in flight, and admin calls (the private
redis-server lives in tests/private_redis.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from tests.conftest import ADMIN_KEY, served
from workersim.sim_app import SimApp, create_sim_app
from workersim.sim_settings import SimConfig

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class CountingWorker:
    """A simulated worker behind an ASGI wrapper that counts the completions requests in flight."""

    def __init__(self, app: SimApp) -> None:
        self.app = app
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        self.served += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


@contextlib.asynccontextmanager
async def counting_worker(config: SimConfig) -> AsyncIterator[tuple[str, CountingWorker]]:
    worker = CountingWorker(create_sim_app(config))
    async with served(worker, http="httptools", lifespan="on") as url:
        yield url, worker


async def call(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str] | None = None,
               **kw: Any) -> tuple[int, Any, dict[str, str]]:
    async with http.request(method, url, headers=headers if headers is not None else ADMIN, **kw) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body, {k.lower(): v for k, v in resp.headers.items()}


async def org_with_plan(http: aiohttp.ClientSession, base: str, name: str, **plan: Any) -> tuple[str, str]:
    """A new organisation on a new plan; returns (org id, plan id)."""
    status, org, _ = await call(http, "POST", base + "/admin/orgs", json={"name": name})
    assert status == 201, org
    status, created, _ = await call(http, "POST", base + "/admin/plans", json={"name": name + "-plan", **plan})
    assert status == 201, created
    status, assigned, _ = await call(http, "PUT", base + f"/admin/orgs/{org['id']}/plan",
                                     json={"plan_id": created["id"]})
    assert status == 200 and assigned["plan_id"] == created["id"], assigned
    return org["id"], created["id"]


async def new_key(http: aiohttp.ClientSession, base: str, org_id: str, **fields: Any) -> dict[str, Any]:
    status, created, _ = await call(http, "POST", base + "/admin/keys", json={"org_id": org_id, **fields})
    assert status == 201, created
    return created  # type: ignore[no-any-return]


def chat(max_tokens: int | None = 8, content: str = "hello", stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "grok-code-fast-1", "messages": [{"role": "user", "content": content}],
                            "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def complete(http: aiohttp.ClientSession, base: str, key: str, body: dict[str, Any] | None = None
                   ) -> tuple[int, Any, dict[str, str]]:
    async with http.post(base + "/v1/chat/completions", json=body or chat(),
                         headers={"Authorization": f"Bearer {key}"}) as resp:
        raw = await resp.read()
        headers = {k.lower(): v for k, v in resp.headers.items()}
        if resp.content_type == "application/json":
            return resp.status, orjson.loads(raw), headers
        return resp.status, raw, headers
