"""What the routing scripts write per request (both stores, the Lua file and its Python twin): only the
blocks not already recorded recently, in-flight sets cleaned where they grow, the shared prefix search."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from gateway.routing.explain import PEEK
from gateway.routing.index import matched_blocks
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from tests.routing.test_index_scripts import MODEL, WORKERS, chain, record, route


def _b(member: Any) -> bytes:
    return member.encode() if isinstance(member, str) else bytes(member)


async def scores(st: StateStore, key: str) -> dict[bytes, float]:
    if isinstance(st, MemoryState):
        return {_b(k): float(v) for k, v in st.zset(key).items()}
    assert isinstance(st, RedisState)
    return {_b(k): float(v) for k, v in await st.client.zrange(key, 0, -1, withscores=True)}


async def test_a_recent_match_is_not_written_again_only_the_new_blocks(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    first = chain("conv", 10)
    await route(st, ks, first, "r1", waiting=(0, 50, 50))
    idx = ks.prefix_index(MODEL, "w-a")
    before = await scores(st, idx)
    await asyncio.sleep(0.003)
    grown = chain("turn2", 4, after=first)
    r = await route(st, ks, grown, "r2", waiting=(0, 50, 50))
    assert r["chosen"] == "w-a" and r["matches"][0] == 10
    after = await scores(st, idx)
    assert {k: after[k] for k in before} == before  # the matched blocks kept their scores
    new = [after[grown[i * 8:(i + 1) * 8]] for i in range(10, 14)]
    deepest = before[first[72:80]]
    assert new == sorted(new, reverse=True) and new[0] < deepest  # the chain's scores still fall
    assert float(r["last_use"]) < new[-1]  # the feedback threshold spares this request's blocks
    stale, _ = await record(st, ks, "w-a", grown, "r2", stale_before=r["last_use"])
    assert stale == 0 and len(await scores(st, idx)) == 14


async def test_an_old_match_is_scored_again(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    first = chain("conv", 6)
    await route(st, ks, first, "r1", waiting=(0, 50, 50))
    idx = ks.prefix_index(MODEL, "w-a")
    before = await scores(st, idx)
    await asyncio.sleep(0.005)
    r = await route(st, ks, first, "r2", waiting=(0, 50, 50), refresh=2)  # used 5 ms ago > 2 ms
    assert r["matches"][0] == 6 and float(r["last_use"]) == before[first[40:48]]
    after = await scores(st, idx)
    assert all(after[k] > before[k] for k in before)


async def test_only_the_chosen_workers_inflight_set_is_cleaned(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    await route(st, ks, b"", "r1", start=0, waiting=(0, 50, 50))  # w-a
    await route(st, ks, b"", "r2", start=1, waiting=(50, 0, 50))  # w-b
    # both leases pass their deadlines (a replica died mid-request)
    for w in ("w-a", "w-b"):
        key = ks.inflight(MODEL, w)
        if isinstance(st, MemoryState):
            for member in st.zset(key):
                st.zset(key)[member] = 1
        else:
            assert isinstance(st, RedisState)
            await st.client.zadd(key, {m: 1 for m in await st.client.zrange(key, 0, -1)})
    r = await route(st, ks, b"", "r3", start=0, waiting=(0, 50, 50))
    assert r["chosen"] == "w-a" and r["inflight"] == [0, 0, 0]  # passed deadlines never count
    assert len(await scores(st, ks.inflight(MODEL, "w-a"))) == 1  # cleaned where it grew: only r3
    assert len(await scores(st, ks.inflight(MODEL, "w-b"))) == 1  # left for its own next reservation


def _linear(index: dict[Any, float], hashes: bytes) -> int:
    n = 0
    while n < len(hashes) // 8 and hashes[n * 8:(n + 1) * 8] in index:
        n += 1
    return n


async def test_the_prefix_search_finds_the_longest_held_prefix(store: tuple[StateStore, KeySpace]) -> None:
    """Lua (prefix_match.lua, through prefix_peek) and Python (index.matched_blocks) against a linear scan,
    on indexes holding prefixes of a request's chain, as recording and eviction leave them."""
    st, ks = store
    rng = random.Random(7)
    request = chain("req", 40)
    held = {w: rng.choice([0, 0, 1, 2, 17, 39, 40]) for w in WORKERS}
    for w, n in held.items():
        if n:
            await record(st, ks, w, request[:n * 8], f"r-{w}")
            await record(st, ks, w, chain(f"other-{w}", 5), f"o-{w}")
    keys = [ks.affinity(MODEL, "-")]
    for w in WORKERS:
        keys += [ks.prefix_index(MODEL, w), ks.inflight(MODEL, w)]
    for blocks in (0, 1, 2, 16, 39, 40):
        out = await st.run(PEEK, keys, [request[:blocks * 8], "1", "0"])
        expected = [min(held[w], blocks) for w in WORKERS]
        assert [int(m) for m in out[1:4]] == expected
        for w in WORKERS:
            index = dict.fromkeys((await scores(st, ks.prefix_index(MODEL, w))), 0.0)
            want = min(held[w], blocks)
            assert matched_blocks(index, request, blocks) == _linear(index, request[:blocks * 8]) == want
