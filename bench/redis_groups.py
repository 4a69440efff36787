"""Redis CPU per routed request with worker groups (GATEWAY_ROUTING_GROUPS), per shard and for the fleet.

    python -m bench.redis_groups [--rounds 300] [--workers 64] [--tokens 32000] [--groups 1,4,8,16]

Each worker group's routing keys carry their own hash tag, so on Redis Cluster each group is its own slot.
Here each group gets a PRIVATE redis-server of its own (what a cluster with a group's slot on each master
amounts to, without the cluster's redirection layer): the bench's store sends each script call to its
group's server. For each case the stages run what the Forwarder runs per request (``bench.redis_cpu``'s
routing case: plan into the pre-request round trip, execute, choose, finish, execute), 32 at a time, over
``--conversations`` distinct coding-agent conversations that GROW: each conversation's next request is
its previous one plus a turn (an answer and a tool result), starting at ``--tokens`` (``--fixed``: the
same 8 prompts over and over, as ``bench.redis_cpu`` sends them). Figures, per routed request of the
fleet: the Redis CPU (``used_cpu_sys + used_cpu_user``) of all the servers together and of the busiest one, the busiest
group's share of the requests (each server's idle CPU, measured for a second before the run, is
subtracted), and what follows: the routed requests/s the fleet carries with one master
per group (1e6 / the busiest server's us per fleet request) and what one group's shard carries of its own
requests (1e6 / that server's us per request of its group).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from bench.redis_cpu import ServerCpu, _pool, _ready, _spread, routing_case, start_redis
from bench.route_cpu import conversation
from gateway.routing.router import RouterConfig
from gateway.state.base import Script
from gateway.state.redis import RedisState
from gateway.state.resp import RespClient

WARM = 50
IDLE_S = 1.0
_GROUP = re.compile(r"\{rt#(\d+):")


def _group_of(key: str) -> int:
    found = _GROUP.search(key)
    return int(found.group(1)) if found else 0


class GroupedState:
    """One RedisState per worker group; each call goes to its group's server, all servers in parallel."""

    shared = True

    def __init__(self, states: list[RedisState]) -> None:
        self.states = states
        self.routed = [0] * len(states)  # prefix_route calls per group

    def round_trip(self) -> GroupedTrip:
        return GroupedTrip(self)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        trip = self.round_trip()
        trip.call(script, keys, args)
        return (await trip.execute())[0]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        for state in self.states:
            await state.close()


class GroupedTrip:
    def __init__(self, owner: GroupedState) -> None:
        self._owner = owner
        self._calls: list[tuple[Script, Sequence[str], Sequence[Any]]] = []

    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> int:
        self._calls.append((script, keys, args))
        return len(self._calls) - 1

    async def execute(self) -> list[Any]:
        by_group: dict[int, list[int]] = {}
        for i, (script, keys, _) in enumerate(self._calls):
            group = _group_of(keys[0]) if keys else 0
            by_group.setdefault(group, []).append(i)
            if script.name == "prefix_route":
                self._owner.routed[group] += 1
        trips = []
        for group, calls in by_group.items():
            trip = self._owner.states[group].round_trip()
            for i in calls:
                trip.call(*self._calls[i])
            trips.append(trip)
        outs = await asyncio.gather(*(t.execute() for t in trips))
        results: list[Any] = [None] * len(self._calls)
        for calls, out in zip(by_group.values(), outs, strict=True):
            for i, result in zip(calls, out, strict=True):
                results[i] = result
        return results


def growing(tokens: int, seed: int, turns: int) -> list[bytes]:
    """One conversation's requests: ``tokens`` long, then one more turn each (an answer and a tool result)."""
    target = len(conversation(tokens, seed))  # bytes of bench.route_cpu's prompt of that many tokens
    full = orjson.loads(conversation(tokens * 3, seed))
    messages = full["messages"]
    start = len(messages)
    for k, m in enumerate(messages):
        if m["role"] == "tool" and len(orjson.dumps({**full, "messages": messages[:k + 1]})) >= target:
            start = k + 1
            break
    cuts = list(range(start, len(messages) + 1, 2))[:turns]
    return [orjson.dumps({**full, "messages": messages[:cut]}) for cut in cuts]


async def measure(urls: list[str], state: GroupedState, n: int, concurrency: int,
                  one: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    servers = [ServerCpu(url) for url in urls]
    try:
        await _spread(WARM, concurrency, one)  # warm: scripts loaded
        idle0 = [(await s.read())[0] for s in servers]
        t0 = time.monotonic()
        await asyncio.sleep(IDLE_S)  # what each server burns doing nothing (cron, the INFO reads): subtracted
        idle1 = [(await s.read())[0] for s in servers]
        idle_rate = [(b - a) / (time.monotonic() - t0) for a, b in zip(idle0, idle1, strict=True)]
        routed0 = list(state.routed)
        t1 = time.monotonic()
        await _spread(n, concurrency, lambda i: one(WARM + i))  # requests after the warm ones
        after = [(await s.read())[0] for s in servers]
        busy = time.monotonic() - t1
    finally:
        for s in servers:
            await s.close()
    cpu = [max(0.0, (b - a - r * busy)) * 1e6 for a, b, r in zip(idle1, after, idle_rate, strict=True)]  # us
    routed = [b - a for a, b in zip(routed0, state.routed, strict=True)]
    busiest = max(range(len(cpu)), key=lambda g: cpu[g])
    return {"all_us": sum(cpu) / n, "busiest_us": cpu[busiest] / n, "share": max(routed) / n,
            "own_us": cpu[busiest] / max(1, routed[busiest])}


async def main(args: argparse.Namespace) -> None:
    groups = [int(g) for g in args.groups.split(",")]
    servers = [start_redis() for _ in range(max(groups))]
    try:
        urls = [url for _, url, _ in servers]
        for url in urls:
            await _ready(url)
        print(f"Redis CPU per routed request with worker groups (one private redis-server per group, lean client, "
              f"{args.concurrency} at a time, {args.rounds} requests per case, "
              f"{'8 fixed prompts' if args.fixed else f'{args.conversations} growing conversations'})")
        print(f"{'workers':>7} {'tokens':>7} {'groups':>6} | {'all shards us/req':>17} {'busiest us/req':>14} "
              f"{'busiest share':>13} | {'fleet req/s':>11} {'one group shard req/s':>21}")
        async with aiohttp.ClientSession() as http:
            for w in (int(x) for x in args.workers.split(",")):
                pool = _pool(http, w)
                for t in (int(x) for x in args.tokens.split(",")):
                    if args.fixed:
                        raws = [conversation(t, seed) for seed in range(8)]
                    else:  # conversation c's k-th request at raws[k * conversations + c]
                        turns = (args.rounds + WARM) // args.conversations + 1
                        per = [growing(t, seed, turns) for seed in range(args.conversations)]
                        raws = [per[c][min(k, len(per[c]) - 1)] for k in range(turns) for c in range(len(per))]
                    for g in groups:
                        state = GroupedState([RedisState(Redis.from_url(u), RespClient(u, reply_timeout=120.0))
                                              for u in urls[:g]])
                        case = routing_case(state, pool, raws, f"gwg-{w}-{t}-{g}-{os.urandom(2).hex()}",
                                            RouterConfig(groups=g) if g > 1 else None)
                        f = await measure(urls[:g], state, args.rounds, args.concurrency, case)
                        await state.close()
                        print(f"{w:>7} {t:>7} {g:>6} | {f['all_us']:>17.1f} {f['busiest_us']:>14.1f} "
                              f"{f['share']:>13.2f} | {1e6 / f['busiest_us']:>11,.0f} {1e6 / f['own_us']:>21,.0f}")
    finally:
        for proc, _, folder in servers:
            proc.kill()
            proc.wait(5)
            shutil.rmtree(folder, ignore_errors=True)



if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--workers", default="64")
    ap.add_argument("--tokens", default="32000")
    ap.add_argument("--groups", default="1,4,8,16")
    ap.add_argument("--conversations", type=int, default=64)
    ap.add_argument("--fixed", action="store_true", help="8 fixed prompts, as bench.redis_cpu")
    asyncio.run(main(ap.parse_args()))
