"""Redis CPU per routed request, against worker count and prompt length; the same for the limiter, the
budget and the usage append; and the gateway's own CPU per request on a cluster versus one node.

    python -m bench.redis_cpu [--rounds 300] [--concurrency 32] [--workers 4,16,64,256] [--tokens 1000,32000,128000]

Everything runs against PRIVATE redis-servers started here (one standalone, and a 3-master cluster for
the last table), so no other client's work is mixed into the figures. For each case the stages run
exactly what the Forwarder runs per request (plan into the pre-request round trip, execute, admit or
choose, finish into the post-request round trip, execute), ``--concurrency`` requests at a time, on the
lean client. Redis's share is read from the server: ``INFO commandstats`` (usec of EVALSHA per call, and
per request) and ``used_cpu_sys + used_cpu_user`` deltas (everything: Lua, parsing, sockets). The
requests/s one shard carries is 1e6 / (Redis CPU us per request), Redis being one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.route_cpu import MODEL, conversation
from gateway.config import Settings
from gateway.front.chat import ChatCompletions
from gateway.limits.limit_stage import RateLimitStage
from gateway.metering.budget import Budgets
from gateway.metering.usage_stage import Metering, PriceCatalog
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Budget, Principal, RateLimits
from gateway.routing.pool import WorkerPool
from gateway.routing.router import PrefixRouter, RouterConfig
from gateway.routing.worker import Worker
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.state.resp import RespClient
from gateway.state.resp_cluster import ClusterResp
from gateway.upstream.worker_probe import WorkerProbe
from tests.private_cluster import cluster_port, private_cluster

LIMITS = RateLimits(org_rpm=10**9, org_tpm=10**12, org_tpd=10**12, org_concurrency=10**5, key_rpm=5 * 10**8,
                    key_tpm=5 * 10**11, key_concurrency=5 * 10**4)
USAGE = {"prompt_tokens": 1000, "completion_tokens": 64, "prompt_tokens_details": {"cached_tokens": 900}}


class ServerCpu:
    """Deltas of one redis-server's CPU and EVALSHA/EVAL commandstats."""

    def __init__(self, url: str) -> None:
        self._client = Redis.from_url(url)

    async def read(self) -> tuple[float, int, int]:
        cpu = await self._client.info("cpu")
        stats = await self._client.info("commandstats")
        calls = usec = 0
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            calls += int(stats.get(name, {}).get("calls", 0))
            usec += int(stats.get(name, {}).get("usec", 0))
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls, usec

    async def close(self) -> None:
        await self._client.aclose()


async def _spread(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    counter = iter(range(n))

    async def client() -> None:
        for i in counter:
            await one(i)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def measure(url: str, n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    """Redis's CPU per request (us), EVAL usec per call and per request, and the gateway's CPU per request."""
    server = ServerCpu(url)
    try:
        await _spread(min(n, 50), concurrency, one)  # warm: scripts loaded, index filled
        cpu0, calls0, usec0 = await server.read()
        gw0 = time.process_time()
        await _spread(n, concurrency, one)
        gw = (time.process_time() - gw0) / n * 1e6
        cpu1, calls1, usec1 = await server.read()
    finally:
        await server.close()
    calls = max(1, calls1 - calls0)
    return {"cpu_us": (cpu1 - cpu0) / n * 1e6, "usec_call": (usec1 - usec0) / calls,
            "usec_req": (usec1 - usec0) / n, "calls_req": calls / n, "gateway_us": gw}


def _pool(http: WorkerProbe, workers: int) -> WorkerPool:
    pool = WorkerPool(http)
    for i in range(workers):
        w = pool.add(f"http://127.0.0.1:{20000 + i}", "config")
        w.healthy, w.models = True, frozenset({MODEL})
        w.metrics = {"kv_tokens": 500_000.0, "waiting": 0.0, "kv": 0.3}
    return pool


def routing_case(state: StateStore, pool: WorkerPool, raws: list[bytes], prefix: str,
                 config: RouterConfig | None = None, cold: bool = False) -> Callable[[int], Awaitable[None]]:
    """Route ``raws`` in turn; ``cold``: every request under a cache salt of its own (all its blocks new)."""
    router = PrefixRouter(pool, KeySpace(prefix), MemoryState(), state, config)
    requests = [ChatCompletions().parse(raw) for raw in raws]  # parsed once: Redis's work is the figure here

    async def one(i: int) -> None:
        raw = raws[i % len(raws)]
        parsed = requests[i % len(raws)]  # the body copied: the router sets cache_salt on it
        salt = f"salt{i}" if cold else "salt"
        ex = Exchange(request_id=f"r{i}", principal=Principal("k", f"o{i % 8}", "o", salt, True),
                      request=replace(parsed, body=dict(parsed.body)), path="/v1/chat/completions", payload=raw)
        trip = state.round_trip()
        router.plan(ex, trip)
        results = await trip.execute()
        worker = router.choose(ex, results, pool.candidates(MODEL), ())
        assert worker is not None
        ex.worker, ex.status, ex.usage = worker, 200, USAGE
        settle = state.round_trip()
        router.finish(ex, settle)
        router.settled(ex, await settle.execute())

    return one


def stage_case(state: RedisState, which: str, prefix: str) -> Callable[[int], Awaitable[None]]:
    space, catalog = KeySpace(prefix), PriceCatalog()
    month = time.strftime("%Y-%m", time.gmtime())
    raw = orjson.dumps({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi " * 300}]})
    request = ChatCompletions().parse(raw)
    worker = Worker("w1", "http://w1", "config")
    stage: Any = {"limiter": lambda: RateLimitStage(space), "budget": lambda: Budgets(space, catalog),
                  "usage append": lambda: Metering(space, catalog)}[which]()
    principal = Principal("key_b", "org_b", "org", "salt", True, budget=Budget(month, org_limit_ticks=10**15),
                          limits=LIMITS)

    async def one(i: int) -> None:
        ex = Exchange(request_id=f"q{i}", principal=principal, request=request, path="/v1/chat/completions",
                      payload=raw)
        trip = state.round_trip()
        stage.plan(ex, trip)
        results = await trip.execute()
        stage.observe(ex, results)
        stage.admit(ex, results)
        ex.worker, ex.status, ex.usage = worker, 200, USAGE
        ex.first_byte_at = ex.finished_at = ex.started
        post = state.round_trip()
        stage.finish(ex, post)
        await post.execute()

    return one


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    port = cluster_port(set())
    folder = tempfile.mkdtemp(prefix="gw-bench-redis-")
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"redis://127.0.0.1:{port}/0", folder


async def _ready(url: str) -> None:
    client = Redis.from_url(url)
    try:
        for _ in range(250):
            with contextlib.suppress(OSError, RedisError):
                if await client.ping():
                    return
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    workers = [int(w) for w in args.workers.split(",")]
    tokens = [int(t) for t in args.tokens.split(",")]
    proc, url, folder = start_redis()
    try:
        await _ready(url)
        state = RedisState(Redis.from_url(url), RespClient(url, reply_timeout=120.0))  # 256 workers: slow scripts
        async with WorkerProbe.build(Settings()) as http:
            print(f"Redis CPU per routed request (one private redis-server, lean client, {args.concurrency} at a time, "
                  f"{args.rounds} requests per case, "
                  f"{'every one a new prompt' if args.cold else '8 conversations, each prompt sent again and again'})")
            print(f"{'workers':>7} {'tokens':>7} | {'redis cpu us/req':>16} {'EVAL us/call':>12} {'EVAL us/req':>11} "
                  f"{'calls/req':>9} | {'req/s one shard':>15}")
            for w in workers:
                pool = _pool(http, w)
                for t in tokens:
                    raws = [conversation(t, seed) for seed in range(8)]
                    f = await measure(url, args.rounds, args.concurrency,
                                      routing_case(state, pool, raws, f"gwb-{w}-{t}-{os.urandom(2).hex()}",
                                                   cold=args.cold))
                    print(f"{w:>7} {t:>7} | {f['cpu_us']:>16.1f} {f['usec_call']:>12.1f} {f['usec_req']:>11.1f} "
                          f"{f['calls_req']:>9.1f} | {1e6 / f['cpu_us']:>15,.0f}")
            print()
            print(f"{'stage':>15} | {'redis cpu us/req':>16} {'EVAL us/call':>12} {'EVAL us/req':>11} | "
                  f"{'req/s one shard':>15}")
            for which in ("limiter", "budget", "usage append"):
                f = await measure(url, args.rounds * 4, args.concurrency,
                                  stage_case(state, which, f"gwb-{which[:3]}-{os.urandom(2).hex()}"))
                print(f"{which:>15} | {f['cpu_us']:>16.1f} {f['usec_call']:>12.1f} {f['usec_req']:>11.1f} | "
                      f"{1e6 / f['cpu_us']:>15,.0f}")
        await state.close()
        await cluster_vs_single(url, args)
    finally:
        proc.kill()
        proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


async def only_cluster(args: argparse.Namespace) -> None:
    proc, url, folder = start_redis()
    try:
        await _ready(url)
        await cluster_vs_single(url, args)
    finally:
        proc.kill()
        proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


async def cluster_vs_single(url: str, args: argparse.Namespace) -> None:
    """The gateway's own CPU per request (limiter + routing at 64 workers, 1K tokens), single node against a
    3-master cluster, measured in alternating rounds."""
    print()
    print("Gateway CPU per request (this process: limiter + budget + routing + usage append, 64 workers, "
          "1K-token prompts), one node vs a 3-master cluster, alternating rounds")
    async with private_cluster(size=3, replicas=0) as cluster, WorkerProbe.build(Settings()) as http:
        await cluster.wait_healthy(masters=3)
        pool = _pool(http, 64)
        raws = [conversation(1000, seed) for seed in range(8)]
        states = {"single node": (url, RedisState(Redis.from_url(url), RespClient(url, reply_timeout=30.0))),
                  "cluster": (cluster.url, RedisState(Redis.from_url(cluster.url),
                                                      ClusterResp(cluster.url, reply_timeout=30.0)))}
        labels = ("routing", "limiter", "budget", "usage append")
        totals: dict[tuple[str, str], list[float]] = {(n, c): [] for n in states for c in (*labels, "all")}
        for rnd in range(args.cluster_rounds):
            for name, (where, state) in states.items():
                prefix = f"gwb-cl-{rnd}-{os.urandom(2).hex()}"
                cases = [routing_case(state, pool, raws, prefix + "r"),
                         *(stage_case(state, w, prefix + w[:3]) for w in labels[1:])]
                gateway = 0.0
                for label, case in zip(labels, cases, strict=True):
                    us = (await measure(where, args.rounds, args.concurrency, case))["gateway_us"]
                    totals[(name, label)].append(us)
                    gateway += us
                totals[(name, "all")].append(gateway)
        for state in (s for _, s in states.values()):
            await state.close()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    for label in (*labels, "all"):
        single, clustered = median(totals[("single node", label)]), median(totals[("cluster", label)])
        print(f"  {label:>12}: single node {single:7.1f} us/request   cluster {clustered:7.1f} us/request   "
              f"cluster / single {clustered / single:5.2f}  (medians of {args.cluster_rounds} rounds)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--workers", default="4,16,64,256")
    ap.add_argument("--tokens", default="1000,32000,128000")
    ap.add_argument("--cluster-rounds", type=int, default=5)
    ap.add_argument("--cluster-only", action="store_true", help="only the cluster vs single node table")
    ap.add_argument("--cold", action="store_true", help="every routed request a new prompt (its own cache salt)")
    parsed = ap.parse_args()
    asyncio.run(only_cluster(parsed) if parsed.cluster_only else main(parsed))
