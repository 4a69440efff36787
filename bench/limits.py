"""The rate limiter's own cost per request, isolated from HTTP: CPU time of the stage's work.

    python -m bench.limits [--requests 20000] [--concurrency 32] [--redis-url redis://127.0.0.1:6379/0]

Each simulated request runs what the Forwarder runs for it: ``plan`` into a round trip, ``execute``,
``admit`` (headers), then ``finish`` into the post-request round trip and ``execute``, with every kind
of limit on (organisation and key), ``concurrency`` requests at a time on uvloop. Stores: in process
(the embedded default), Redis through the lean client, and Redis through redis-py's pipeline. Prints
CPU microseconds per request (this process only; Redis's own work is not counted) and requests/s.
CPU time is the figure least disturbed by other load on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import orjson
import uvloop
from redis.asyncio import Redis

from gateway.front.chat import ChatCompletions
from gateway.limits.limit_stage import RateLimitStage
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal, RateLimits
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.state.resp import RespClient

BODY = orjson.dumps({"model": "grok-code-fast-1", "max_tokens": 16,
                     "messages": [{"role": "user", "content": "You are a careful coding assistant. " * 20}]})
LIMITS = RateLimits(org_rpm=10**9, org_tpm=10**12, org_tpd=10**12, org_concurrency=10**5, key_rpm=5 * 10**8,
                    key_tpm=5 * 10**11, key_concurrency=5 * 10**4)


async def _run(state: StateStore, requests: int, concurrency: int) -> tuple[float, float]:
    stage = RateLimitStage(KeySpace("gwbench-lim-" + os.urandom(3).hex()))
    principal = Principal("key_bench", "org_bench", "bench", "salt", True, limits=LIMITS)
    request = ChatCompletions().parse(BODY)
    counter = iter(range(requests))

    async def one_client() -> None:
        for i in counter:
            ex = Exchange(request_id=f"req_{i}", principal=principal, request=request, path="/v1/chat/completions",
                          payload=BODY)
            trip = state.round_trip()
            stage.plan(ex, trip)
            results = await trip.execute()
            stage.observe(ex, results)
            stage.admit(ex, results)
            ex.usage = {"prompt_tokens": 180, "completion_tokens": 16}
            trip = state.round_trip()
            stage.finish(ex, trip)
            await trip.execute()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    assert stage.stats.admitted == requests
    return (time.process_time() - cpu) / requests * 1e6, requests / (time.perf_counter() - wall)


async def main(args: argparse.Namespace) -> None:
    stores: list[tuple[str, StateStore]] = [
        ("in process (embedded)", MemoryState()),
        ("redis, lean client", RedisState(Redis.from_url(args.redis_url), RespClient(args.redis_url))),
        ("redis, redis-py pipeline", RedisState(Redis.from_url(args.redis_url))),
    ]
    print(f"{'store':<28} {'cpu us/req':>10} {'req/s':>9}")
    for name, state in stores:
        await _run(state, min(2000, args.requests), args.concurrency)  # warm-up, loads the scripts
        cpu_us, rate = await _run(state, args.requests, args.concurrency)
        print(f"{name:<28} {cpu_us:10.1f} {rate:9.0f}")
        await state.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    uvloop.run(main(ap.parse_args()))
