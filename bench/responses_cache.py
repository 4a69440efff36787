"""A conversation continued by ``previous_response_id`` reaches the same cached share as the same
conversation resent whole as chat messages (target: within 1 point).

The same conversation of ``--turns`` turns twice, each started cold (by two organisations: the
gateway salts each organisation's prefix cache apart), through one gateway in front of two simulated
workers: once on ``/v1/responses`` sending only the new turn and ``previous_response_id``, once on
``/v1/chat/completions`` resending every message.
The cached share is the sum of ``cached_tokens`` over the sum of input tokens, over all turns.

    python -m bench.responses_cache [--turns 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import uvicorn

MODEL = "grok-code-fast-1"
SYSTEM = "You are a coding agent working in a large repository. Follow the house rules. " * 12


@dataclass
class Shares:
    responses: float
    chat: float
    turns: int

    @property
    def gap_points(self) -> float:
        return abs(self.responses - self.chat) * 100


def _turn(tag: str, i: int) -> str:
    return f"[{tag}] step {i:02d}: read the next module and say what it does. " * 4


async def chained(client: openai.AsyncOpenAI, turns: int, tag: str) -> float:
    cached = prompt = 0
    previous: str | None = None
    for i in range(turns):
        r = await client.responses.create(model=MODEL, instructions=SYSTEM, input=_turn(tag, i), max_output_tokens=24,
                                          previous_response_id=previous)  # type: ignore[arg-type]
        assert r.usage is not None
        cached += r.usage.input_tokens_details.cached_tokens
        prompt += r.usage.input_tokens
        previous = r.id
    return cached / prompt


async def resent(client: openai.AsyncOpenAI, turns: int, tag: str) -> float:
    cached = prompt = 0
    messages: list[Any] = [{"role": "system", "content": SYSTEM}]
    for i in range(turns):
        messages.append({"role": "user", "content": _turn(tag, i)})
        r = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24)
        assert r.usage is not None
        details = r.usage.prompt_tokens_details
        cached += (details.cached_tokens or 0) if details else 0
        prompt += r.usage.prompt_tokens
        messages.append({"role": "assistant", "content": r.choices[0].message.content})
    return cached / prompt


async def compare(base_url: str, keys: tuple[str, str], turns: int = 20) -> Shares:
    """Both conversations through the gateway at ``base_url`` (``.../v1``), one after the other, with the
    keys of two organisations (each starts with a cold cache)."""
    chain = openai.AsyncOpenAI(base_url=base_url, api_key=keys[0], max_retries=0, timeout=60)
    whole = openai.AsyncOpenAI(base_url=base_url, api_key=keys[1], max_retries=0, timeout=60)
    try:
        return Shares(responses=await chained(chain, turns, "T"), chat=await resent(whole, turns, "T"), turns=turns)
    finally:
        await chain.close()
        await whole.close()


@contextlib.asynccontextmanager
async def _gateway(workers: list[str], data: str) -> AsyncIterator[tuple[str, tuple[str, str]]]:
    from gateway.app import create_app
    from gateway.config import Settings
    from gateway.server import server_config

    settings = Settings(workers=workers, database_url=f"sqlite:///{data}/gateway.db", redis_url="",
                        admin_key="bench")
    app = create_app(settings)
    server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=0, loop="none"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        rt = app.runtime
        keys = []
        for name in ("bench-responses", "bench-chat"):
            org = await rt.keys.get_or_create_org(name)
            keys.append((await rt.keys.create_key(org.id, "bench")).key)
        yield f"http://127.0.0.1:{port}/v1", (keys[0], keys[1])
    finally:
        server.should_exit = True
        await task


async def _main(turns: int) -> Shares:
    from workersim.run import start_sim_server
    from workersim.sim_settings import SimConfig

    sims = [await start_sim_server(SimConfig(worker_id=f"sim-{i}", time_scale=0.0, seed=i)) for i in range(2)]
    try:
        with tempfile.TemporaryDirectory() as data:
            async with _gateway([s.url for s in sims], data) as (url, keys):
                return await compare(url, keys, turns)
    finally:
        for s in sims:
            await s.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    shares = asyncio.run(_main(args.turns))
    print(f"turns: {shares.turns}")
    print(f"cached share, previous_response_id: {shares.responses:.2%}")
    print(f"cached share, resent chat messages: {shares.chat:.2%}")
    print(f"gap: {shares.gap_points:.2f} points (target: <= 1)")


if __name__ == "__main__":
    main()
