"""Fixtures for the simulator's tests: simulators served in the test loop, an aiohttp session, SSE parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from workersim.run import RunningSim, start_sim_server
from workersim.sim_settings import SimConfig

MODEL = "grok-code-fast-1"

MakeSim = Callable[..., Awaitable[RunningSim]]


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    """``await make_sim(**SimConfig fields)``: a simulator (``time_scale=0`` unless given), stopped after."""
    started: list[RunningSim] = []

    async def make(**fields: Any) -> RunningSim:
        fields.setdefault("time_scale", 0.0)
        sim = await start_sim_server(SimConfig(**fields))
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sse_data(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    events = [e for e in text.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: "):] for e in events]


def sse_json(text: str) -> list[dict[str, Any]]:
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    return [orjson.loads(d) for d in data[:-1]]


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def tokens_prompt(n: int, start: int = 1000, **extra: Any) -> dict[str, Any]:
    """A completions request whose prompt is exactly ``n`` token ids."""
    return {"model": MODEL, "prompt": list(range(start, start + n)), "max_tokens": 1, **extra}
