"""Routing CPU per request for a long prompt: hashing, the decision and the index update.

    python -m bench.route_cpu [--tokens 100000] [--workers 8] [--rounds 200] [--levers]

A chat request of about ``--tokens`` tokens (a coding agent's conversation: system prompt, tools, turns
of answers and tool results; ~4 bytes per token). Prints, per request, in microseconds of this
process's CPU: canonical bytes + chained block hashes (and per 100 KB of prompt); the router's whole
``plan`` + ``choose`` + ``finish`` on the in-process store (the Python twins run the index lookups and
updates, so this is decision + index update entirely in the gateway); the same on Redis, where the
gateway's share is building and sending the pipeline and Redis runs the Lua (its own time per call is
read from ``INFO commandstats``).

``--levers``: the in-process routing work per request with the session-inference lever on and off,
side by side, for prompts of about 1 KB, 10 KB, 100 KB and 500 KB (is it unchanged at 1 KB, and at
most linear in the prompt's length?). ``--lever bytes_per_token``: the same with the index sized at a
fixed 4 bytes per token (off, the default) against the measured bytes per token (on, routing_bytes_per_token 0);
``--lever work_halflife``: without and with (the default) the recent-work term of a first placement
(routing_work_halflife_s 60).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.workloads import words
from gateway.config import Settings
from gateway.front.chat import ChatCompletions
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal
from gateway.routing.pool import WorkerPool
from gateway.routing.prefix import prefix_key
from gateway.routing.router import PrefixRouter, RouterConfig
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.upstream.worker_probe import WorkerProbe

MODEL = "grok-code-fast-1"


def conversation(tokens: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    system = min(2000, max(20, tokens // 2))
    messages: list[dict[str, Any]] = [{"role": "system", "content": words(rng, system)},
                                      {"role": "user", "content": words(rng, min(100, max(10, tokens // 10)))}]
    size = system + 100
    turn = 0
    while size < tokens:
        result = rng.randint(min(200, tokens // 4), min(3000, max(200, tokens // 4)))
        messages.append({"role": "assistant", "content": words(rng, 40), "tool_calls": [
            {"id": f"c{turn}", "type": "function", "function": {"name": "read", "arguments": '{"path": "a.py"}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{turn}", "content": words(rng, result)})
        size += 50 + result
        turn += 1
    tools = [{"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object"}}} for i in range(8)]
    return orjson.dumps({"model": MODEL, "messages": messages, "tools": tools, "max_tokens": 64})


async def _measure(router: PrefixRouter, state: StateStore, raw: bytes, pool: WorkerPool,
                   rounds: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``rounds`` requests' routing, less the body parses."""
    t0 = os.times()
    parsing = 0.0
    for i in range(rounds):
        parsing += (await router_round(router, state, raw, pool, i))[0]
    t1 = os.times()
    return t1.user - t0.user - parsing, t1.system - t0.system


def cpu_us(fn: Any, rounds: int) -> float:
    t0 = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - t0) / rounds * 1e6


async def router_round(router: PrefixRouter, state: StateStore, raw: bytes, pool: WorkerPool,
                       i: int) -> tuple[float, float]:
    """One request's routing work; returns this process's (user, system) CPU seconds for it (the
    body's parse excluded: the API parses every body once anyway)."""
    t_parse = time.process_time()
    request = ChatCompletions().parse(raw)
    t_parse = time.process_time() - t_parse
    ex = Exchange(request_id=f"r{i}", principal=Principal("k", "o", "o", "salt", True), request=request,
                  path="/v1/chat/completions", payload=raw)
    trip = state.round_trip()
    router.plan(ex, trip)
    results = await trip.execute()
    worker = router.choose(ex, results, pool.candidates(MODEL), ())
    assert worker is not None
    ex.worker, ex.status = worker, 200
    ex.usage = {"prompt_tokens": 100_000, "prompt_tokens_details": {"cached_tokens": 90_000}}
    settle = state.round_trip()
    router.finish(ex, settle)
    router.settled(ex, await settle.execute())
    return t_parse, 0.0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--levers", action="store_true", help="a lever on and off, by prompt size")
    ap.add_argument("--lever", default="infer_sessions", choices=("infer_sessions", "bytes_per_token", "work_halflife"),
                    help="with --levers: which one")
    args = ap.parse_args()
    if args.levers:
        await levers(args)
        return
    raw = conversation(args.tokens)
    body = orjson.loads(raw)
    cfg = RouterConfig()
    key = prefix_key(True, body, MODEL, "salt", cfg.block_bytes, cfg.max_blocks)
    kb = len(raw) / 1000
    print(f"prompt: {len(raw):,} bytes of JSON, {key.total_bytes:,} canonical bytes, {key.blocks} blocks of "
          f"{cfg.block_bytes} bytes (cap {cfg.max_blocks}), {args.workers} workers")
    hash_us = cpu_us(lambda: prefix_key(True, body, MODEL, "salt", cfg.block_bytes, cfg.max_blocks), args.rounds)
    print(f"canonical bytes + block hashes:            {hash_us:8.1f} us/request "
          f"({hash_us / kb * 100:6.1f} us per 100 KB)")
    parse_us = cpu_us(lambda: ChatCompletions().parse(raw), args.rounds)
    print(f"(for scale: parsing the JSON body once:    {parse_us:8.1f} us/request)")

    await with_pool_state(args, raw)


async def levers(args: argparse.Namespace) -> None:
    async with WorkerProbe.build(Settings()) as http:
        pool = WorkerPool(http)
        for i in range(args.workers):
            w = pool.add(f"http://127.0.0.1:{20000 + i}", "config")
            w.healthy, w.models = True, frozenset({MODEL})
            w.metrics = {"kv_tokens": 500_000.0, "waiting": 0.0, "kv": 0.3}
        print(f"{'tokens':>10} {'JSON bytes':>11} {args.lever + ' off us':>17} {'on us':>9} {'on/off':>7} "
              f"{'us per KB (on)':>15}")
        for tokens in (120, 2_500, 25_000, 125_000):
            raw = conversation(tokens)
            rounds = max(20, args.rounds * 250 // tokens) if tokens > 120 else args.rounds * 10
            rounds = min(rounds, 4000)
            figures = []
            for on in (False, True, False, True):  # interleaved: the machine's load drifts
                memory = MemoryState()
                config = (RouterConfig(infer_sessions=on) if args.lever == "infer_sessions"
                          else RouterConfig(work_halflife_ms=60_000 if on else 0) if args.lever == "work_halflife"
                          else RouterConfig(bytes_per_token=0.0 if on else 4.0))
                router = PrefixRouter(pool, KeySpace("gwbench-cpu"), memory, memory, config)
                for i in range(10):
                    await router_round(router, memory, raw, pool, i)
                user, system = await _measure(router, memory, raw, pool, rounds)
                figures.append((user + system) / rounds * 1e6)
            off, on = min(figures[0], figures[2]), min(figures[1], figures[3])
            print(f"{tokens:>10,} {len(raw):>11,} {off:17.1f} {on:9.1f} {on / off:7.2f} {on / (len(raw) / 1000):15.2f}")


async def with_pool_state(args: argparse.Namespace, raw: bytes) -> None:
    async with WorkerProbe.build(Settings()) as http:
        pool = WorkerPool(http)
        for i in range(args.workers):
            w = pool.add(f"http://127.0.0.1:{20000 + i}", "config")
            w.healthy, w.models = True, frozenset({MODEL})
            w.metrics = {"kv_tokens": 500_000.0, "waiting": 0.0, "kv": 0.3}
        memory = MemoryState()
        router = PrefixRouter(pool, KeySpace("gwbench-cpu"), memory, memory)
        for i in range(20):  # warm: the index holds this conversation
            await router_round(router, memory, raw, pool, i)
        user, system = await _measure(router, memory, raw, pool, args.rounds)
        print(f"plan + choose + finish, in-process index:  {(user + system) / args.rounds * 1e6:8.1f} us/request "
              "(hashing, salt, lookup, choice, index update)")

        client = aioredis.Redis.from_url(args.redis)
        prefix = "gwbench-cpu-" + os.urandom(3).hex()
        try:
            shared = RedisState(client)
            router = PrefixRouter(pool, KeySpace(prefix), memory, shared)
            for i in range(20):
                await router_round(router, shared, raw, pool, i)
            before = (await client.info("commandstats")).get("cmdstat_evalsha", {})
            user, system = await _measure(router, shared, raw, pool, args.rounds)
            after = (await client.info("commandstats")).get("cmdstat_evalsha", {})
            print(f"plan + choose + finish, Redis index:       {(user + system) / args.rounds * 1e6:8.1f} us/request "
                  f"of gateway CPU: {user / args.rounds * 1e6:.1f} in Python, {system / args.rounds * 1e6:.1f} in the "
                  "kernel's socket calls (Lua runs in Redis)")
            calls = after.get("calls", 0) - before.get("calls", 0)
            usec = after.get("usec", 0) - before.get("usec", 0)
            if calls:  # the server is shared: other clients' EVALSHA calls may be mixed in
                print(f"  Redis time per script call (route or record): {usec / calls:8.1f} us ({calls} calls)")
        finally:
            found = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if found:
                await client.delete(*found)
            await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
