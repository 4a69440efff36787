"""Billing benchmarks: the ledger writer's throughput and what metering costs the gateway.

    python -m bench.ledger [--records 100000] [--batch 2000 5000] [--writers 1 2] [--seconds 6] [--rounds 2]
                           [--state shared|embedded|both] [--skip-ledger] [--skip-hot-path] [--skip-gateway]

1. Usage records per second from the Redis stream into PostgreSQL: the stream is filled first (not
   timed), then consumers drain it with batched idempotent inserts and XACK/XDEL (timed), for
   several batch sizes. Runs in a fresh temporary database with a unique stream key; both are removed.
2. What the metering and budget stages cost on the request path, in CPU per request, in process.
3. Gateway requests per second and gateway CPU per request with metering (and budgets) on versus
   off, on the shared state (Redis + PostgreSQL; also with the ledger writer in its own process) and
   on the embedded default (in-process + SQLite), side by side (off, on, off, on) against one
   simulated worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time

import asyncpg
import orjson
from redis.asyncio import Redis

from bench.common import ROOT, LoadResult, make_key, pinned, run_load, start_gateway, start_sim, temp_env
from billing.ledger.consumer import FIELD, StreamConsumer
from billing.ledger.dead_letters import DeadLetters
from billing.ledger.sink import LedgerSink
from billing.ledger.writer import LedgerWriter
from billing.usage_record import UsageRecord
from gateway.config import Settings
from gateway.db import engine as db

PG_ADMIN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CHAT = {"model": "grok-code-fast-1", "max_tokens": 16,
        "messages": [{"role": "system", "content": "You are a careful coding assistant. " * 20},
                     {"role": "user", "content": "Write a function that reverses a linked list in Python."}]}


# Today (UTC midnight): the records land in this month's ledger partition, as live traffic does.
_START_MS = int(time.time() // 86400 * 86400 * 1000)


def _record(i: int, run: str) -> bytes:
    return UsageRecord(
        request_id=f"req_{run}_{i:08d}", org_id=f"org_{i % 50}", key_id=f"key_{i % 500}", model="grok-code-fast-1",
        requested_model="grok-code-fast-1", worker=f"w{i % 8}", prompt_tokens=2000 + i % 977, cached_tokens=1500,
        output_tokens=200 + i % 31, reasoning_tokens=i % 17, list_ticks=7_300_000, billed_ticks=7_300_000,
        plan="list", started_at_ms=_START_MS + i * 10, ttfb_ms=40, duration_ms=900, status="ok",
        http_status=200, reported=True, stream=True, end_user=f"user-{i % 1000}").encode()


async def _fill(redis: Redis, stream: str, n: int, run: str) -> None:
    for start in range(0, n, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 5000)):
                pipe.xadd(stream, {FIELD: _record(i, run)})
            await pipe.execute()


async def _drain(consumers: list[StreamConsumer]) -> int:
    async def one(c: StreamConsumer) -> int:
        total = 0
        while True:
            stored = await c.step()
            total += stored.inserted
            if c.last_read == 0:
                return total

    return sum(await asyncio.gather(*(one(c) for c in consumers)))


async def ledger_bench(records: int, batches: list[int], writers: list[int]) -> list[str]:
    name = "gw_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = Settings(database_url=PG_ADMIN.rsplit("/", 1)[0] + "/" + name).sqlalchemy_url
    redis = Redis.from_url(REDIS_URL)
    lines = []
    try:
        await db.upgrade(url)
        engine = db.make_engine(url)
        sink = LedgerSink(LedgerWriter(engine), DeadLetters(engine))
        for batch in batches:
            for n_writers in writers:
                stream = f"gwbench-{secrets.token_hex(4)}:{{usage}}"
                run = secrets.token_hex(3)
                await _fill(redis, stream, records, run)
                consumers = [StreamConsumer(redis, stream, sink, epoch_key=stream + ":epoch", consumer=f"c{i}",
                                            batch_size=batch, block_ms=1)
                             for i in range(n_writers)]
                t0 = time.perf_counter()
                inserted = await _drain(consumers)
                elapsed = time.perf_counter() - t0
                left = await redis.xlen(stream)
                await redis.delete(stream, stream + ":epoch")
                lines.append(f"batch {batch:>5}, {n_writers} writer(s): {inserted:>7} rows in {elapsed:6.2f}s = "
                             f"{inserted / elapsed:9.0f} records/s (stream left: {left})")
        await engine.dispose()
    finally:
        await redis.aclose()
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return lines


def _temp_pg() -> tuple[str, str]:
    name = "gw_bench_" + secrets.token_hex(4)

    async def create() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    return name, PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def _drop_pg(name: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


async def hot_path_cost(n: int) -> list[str]:
    """CPU per request of what metering and budgets add on the request path, measured in process
    (robust on a noisy machine): the record built and priced, the XADD queued in the post-request
    round trip, and a budget reservation and settle (for a principal with a budget)."""
    from gateway.front.chat import ChatCompletions
    from gateway.metering.budget import Budgets
    from gateway.metering.usage_stage import Metering, PriceCatalog
    from gateway.pipeline.exchange import Exchange
    from gateway.pipeline.principal import Budget, Principal
    from gateway.routing.worker import Worker
    from gateway.state.keyspace import KeySpace
    from gateway.state.memory import MemoryState

    raw = orjson.dumps({**CHAT, "stream": True})
    usage = {"prompt_tokens": 213, "completion_tokens": 27, "total_tokens": 411,
             "prompt_tokens_details": {"cached_tokens": 192}, "completion_tokens_details": {"reasoning_tokens": 171}}
    worker = Worker("w1", "http://w1", "config")
    catalog = PriceCatalog()
    space = KeySpace("bench-" + secrets.token_hex(3))
    metering, budgets = Metering(space, catalog), Budgets(space, catalog)
    month = time.strftime("%Y-%m", time.gmtime())
    plain = Principal("key_1", "org_1", "org", "salt", True)
    capped = Principal("key_1", "org_1", "org", "salt", True, Budget(month, org_limit_ticks=10**15))
    lines = []
    for label, principal in (("metering only", plain), ("metering + budget", capped)):
        state = MemoryState()
        t0 = time.process_time()
        for i in range(n):
            ex = Exchange(request_id=f"req_{i}", principal=principal, request=ChatCompletions().parse(raw),
                          path="/v1/chat/completions", payload=raw)
            pre = state.round_trip()
            budgets.plan(ex, pre)
            metering.plan(ex, pre)
            results = await pre.execute()
            budgets.observe(ex, results)
            budgets.admit(ex, results)
            ex.worker, ex.usage, ex.status = worker, usage, 200
            ex.first_byte_at = ex.finished_at = ex.started
            post = state.round_trip()
            budgets.finish(ex, post)
            metering.finish(ex, post)
            await post.execute()
        per = (time.process_time() - t0) / n * 1e6
        t0 = time.process_time()
        for i in range(n):
            Exchange(request_id=f"req_{i}", principal=principal, request=ChatCompletions().parse(raw),
                     path="/v1/chat/completions", payload=raw)
        base = (time.process_time() - t0) / n * 1e6
        lines.append(f"{label:<18} {per - base:5.1f} us CPU per request (in-process state; the exchange's own "
                     f"parse excluded)")
    return lines


def _start_writer(env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = pinned([sys.executable, "-m", "gateway.cli", "billing", "writer"], "1")
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def gateway_bench(seconds: int, connections: int, rounds: int, states: list[str]) -> list[str]:
    """Metering off, on (ledger writers inside the gateway) and, with Redis, on with the writer in
    its own process (``GATEWAY_LEDGER_WRITERS=0`` + ``gateway billing writer``), side by side."""
    sim = start_sim("1")
    lines = []
    try:
        body = orjson.dumps({**CHAT, "stream": True})
        for state in states:
            db_name, db_url = _temp_pg() if state == "shared" else ("", "")
            try:
                env = temp_env(REDIS_URL if state == "shared" else "", db_url)
                key = make_key(env)
                arms = {"off": {"GATEWAY_METERING_ENABLED": "false"}, "on": {"GATEWAY_METERING_ENABLED": "true"}}
                if state == "shared":
                    arms["on, own writer"] = {"GATEWAY_METERING_ENABLED": "true", "GATEWAY_LEDGER_WRITERS": "0"}
                results: dict[str, list[tuple[LoadResult, float]]] = {arm: [] for arm in arms}
                for _ in range(rounds):
                    for arm, extra in arms.items():
                        writer = _start_writer(env) if "own writer" in arm else None
                        gw = start_gateway("0", [sim.url], {**env, **extra})
                        try:
                            run_load(gw.url + "/v1/chat/completions", body, key, 1, connections, "1")  # warm-up
                            cpu0 = gw.cpu_seconds()
                            result = run_load(gw.url + "/v1/chat/completions", body, key, seconds, connections, "1")
                            cpu_us = (gw.cpu_seconds() - cpu0) / (result.requests_per_s * seconds) * 1e6
                            results[arm].append((result, cpu_us))
                        finally:
                            gw.stop()
                            if writer is not None:
                                writer.terminate()
                                writer.wait(10)
                base_rps = sum(r.requests_per_s for r, _ in results["off"]) / rounds
                base_cpu = sum(c for _, c in results["off"]) / rounds
                for arm, runs in results.items():
                    rps = sum(r.requests_per_s for r, _ in runs) / rounds
                    p50 = sum(r.p50_ms for r, _ in runs) / rounds
                    cpu = sum(c for _, c in runs) / rounds
                    errors = sum(r.errors for r, _ in runs)
                    lines.append(f"{state:<8} metering {arm:<15} {rps:6.0f} req/s  p50 {p50:6.2f} ms  gateway CPU "
                                 f"{cpu:4.0f} us/req  | vs off: throughput {rps / base_rps:5.3f}, CPU "
                                 f"{cpu / base_cpu:5.3f}  errors {errors}")
            finally:
                if db_name:
                    _drop_pg(db_name)
    finally:
        sim.stop()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, nargs="*", default=[2000, 5000])
    ap.add_argument("--writers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--state", choices=["shared", "embedded", "both"], default="both")
    ap.add_argument("--skip-ledger", action="store_true")
    ap.add_argument("--skip-gateway", action="store_true")
    ap.add_argument("--skip-hot-path", action="store_true")
    args = ap.parse_args()
    if not args.skip_ledger:
        print("ledger writer: Redis stream -> PostgreSQL (idempotent insert + hourly rollups, then XACK/XDEL)")
        for line in asyncio.run(ledger_bench(args.records, args.batch, args.writers)):
            print("  " + line)
    if not args.skip_hot_path:
        print("request-path cost of metering and budgets (stage code only)")
        for line in asyncio.run(hot_path_cost(20_000)):
            print("  " + line)
    if not args.skip_gateway:
        print(f"gateway, streaming, metering and budgets on vs off ({args.seconds}s x {args.rounds} rounds each, "
              f"{args.connections} connections)")
        states = ["shared", "embedded"] if args.state == "both" else [args.state]
        for line in gateway_bench(args.seconds, args.connections, args.rounds, states):
            print("  " + line)


if __name__ == "__main__":
    main()
