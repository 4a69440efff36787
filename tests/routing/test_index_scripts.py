"""The routing scripts, run against both stores with the same expectations: the Lua file on real Redis
and its Python twin in process."""

from __future__ import annotations

import asyncio
from typing import Any

from xxhash import xxh3_64_intdigest

from gateway.routing.index import PURGE, RECORD, ROUTE
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace

MODEL = "m"
WORKERS = ["w-a", "w-b", "w-c"]



def chain(tag: str, n: int, after: bytes = b"") -> bytes:
    """n packed block hashes continuing ``after``'s chain."""
    h = int.from_bytes(after[-8:], "little") if after else xxh3_64_intdigest(tag.encode())
    out = bytearray(after)
    for i in range(n):
        h = xxh3_64_intdigest(f"{tag}:{i}".encode(), h)
        out += h.to_bytes(8, "little")
    return bytes(out)


async def route(st: StateStore, ks: KeySpace, hashes: bytes, rid: str, hint: str | None = None,
                waiting: tuple[float, ...] = (0, 0, 0), kv: tuple[float, ...] = (0, 0, 0), start: int = 0,
                prefix: bool = True, cap: int = 1000, refresh: int = 1000,
                affinity_slack: float = 2.0, opens: bool = True, halflife: int = 0,
                work_weight: float = 1.0) -> dict[str, Any]:
    keys = [ks.affinity(MODEL, hint or "-")]
    args: list[Any] = [hashes, "1" if prefix else "0", 1.25, 2.0, 0.95, 4.0, start, rid, 60_000, 60_000,
                       "1" if hint else "0", 60_000, refresh, affinity_slack, "1" if opens else "0", halflife,
                       work_weight]
    for i, w in enumerate(WORKERS):
        keys += [ks.prefix_index(MODEL, w), ks.inflight(MODEL, w)]
        args += [w, waiting[i], kv[i], cap]
    if halflife:
        keys += [ks.work(MODEL, w) for w in WORKERS]
    r = await st.run(ROUTE, keys, args)
    n = len(WORKERS)
    return {"chosen": WORKERS[int(r[0])] if int(r[0]) >= 0 else None, "affinity": bool(r[1]),
            "evicted": int(r[2]), "last_use": r[3].decode() if isinstance(r[3], bytes) else str(r[3]),
            "matches": [int(x) for x in r[4:4 + n]], "inflight": [int(x) for x in r[4 + n:4 + 2 * n]],
            "work": [x.decode() if isinstance(x, bytes) else str(x) for x in r[4 + 2 * n:]], "raw": r}


async def record(st: StateStore, ks: KeySpace, worker: str, hashes: bytes, rid: str, cap: int = 1000,
                 stale_before: str = "", reserved: str | None = None) -> list[int]:
    keys = [ks.prefix_index(MODEL, worker), ks.inflight(MODEL, reserved or worker)]
    result = await st.run(RECORD, keys, [hashes, cap, rid, stale_before, "1", 60_000])
    return [int(x) for x in result]


async def test_match_lengths_choice_and_inflight(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    first = chain("conv", 10)
    r = await route(st, ks, first, "r1", start=1)
    assert r["matches"] == [0, 0, 0] and r["chosen"] == "w-b"  # nobody matches: the rotation's first
    assert r["inflight"] == [0, 0, 0]
    r = await route(st, ks, first, "r1b", start=0)  # recorded at once: seen before r1 ends
    assert r["matches"] == [0, 10, 0] and r["chosen"] == "w-b" and r["inflight"] == [0, 1, 0]
    await record(st, ks, "w-b", first, "r1b")
    assert await record(st, ks, "w-b", first, "r1") == [0, 0]
    grown = chain("turn2", 5, after=first)
    r = await route(st, ks, grown, "r2", start=0)
    assert r["matches"] == [0, 10, 0] and r["chosen"] == "w-b"
    diverged = chain("conv", 6) + chain("other", 4, after=chain("conv", 6))[48:]
    r = await route(st, ks, diverged, "r3", start=0)
    assert r["matches"] == [0, 6, 0] and r["chosen"] == "w-b" and r["inflight"] == [0, 1, 0]
    await record(st, ks, "w-b", grown, "r2")
    r = await route(st, ks, b"", "r4", start=0)
    assert r["inflight"] == [0, 1, 0]  # r2 released, r3 still in flight


async def test_a_loaded_worker_spills_and_least_loaded_ignores_prefix(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    hot = chain("system", 8)
    await record(st, ks, "w-a", hot, "warm")
    chosen = [(await route(st, ks, hot + chain("u", 1, after=hot)[64:], f"r{i}"))["chosen"] for i in range(9)]
    assert chosen[:2] == ["w-a", "w-a"]  # prefix while the load bound allows
    assert set(chosen) == set(WORKERS)  # then it spreads
    r = await route(st, ks, hot, "x", waiting=(0, 0, 0), start=0, prefix=False)
    assert r["matches"] == [0, 0, 0]


async def test_affinity_hint_binds_a_conversation(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    r1 = await route(st, ks, b"", "r1", hint="conv-1", start=2)
    assert r1["chosen"] == "w-c" and not r1["affinity"]
    r2 = await route(st, ks, chain("anything", 3), "r2", hint="conv-1", start=0)
    assert r2["chosen"] == "w-c" and r2["affinity"]
    r3 = await route(st, ks, b"", "r3", hint="conv-1", waiting=(0, 0, 50), start=0)
    assert r3["chosen"] != "w-c"  # load wins over the hint...
    r4 = await route(st, ks, b"", "r4", hint="conv-1", start=0)
    assert r4["chosen"] == r3["chosen"] and r4["affinity"]  # ...and the conversation follows


async def test_affinity_slack_holds_a_bound_conversation_past_the_load_slack(
        store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    conv = chain("conv", 6)
    r = await route(st, ks, conv, "r1", hint="conv-1", start=2)
    assert r["chosen"] == "w-c"
    await record(st, ks, "w-c", conv, "r1")
    # w-c at load 2: 2 + 1 > least + load slack 2, but within least + affinity slack 4
    queue = (0, 0, 2)
    kept = await route(st, ks, conv + chain("t2", 1, after=conv)[48:], "r2", hint="conv-1", waiting=queue,
                       affinity_slack=4.0)
    assert kept["chosen"] == "w-c" and kept["affinity"]
    await record(st, ks, "w-c", conv, "r2")
    moved = await route(st, ks, conv, "r3", hint="conv-1", waiting=queue)  # affinity slack = load slack
    assert moved["chosen"] != "w-c" and not moved["affinity"]
    await record(st, ks, moved["chosen"], b"", "r3")
    # a new conversation holding the same prefix on w-c (no binding yet) still sees the load slack
    await record(st, ks, "w-c", conv, "warm")
    fresh = await route(st, ks, conv, "r4", hint="conv-2", waiting=queue, affinity_slack=4.0)
    assert fresh["matches"][2] == 6 and fresh["chosen"] != "w-c"
    await record(st, ks, fresh["chosen"], b"", "r4")
    # past least + affinity slack, the bound conversation moves as well
    bound = await route(st, ks, conv, "r5", hint="conv-3", start=2)  # bind conv-3 to w-c first
    await record(st, ks, bound["chosen"], b"", "r5")
    far = await route(st, ks, conv, "r6", hint="conv-3", waiting=(0, 0, 4), affinity_slack=4.0)
    assert bound["chosen"] == "w-c" and far["chosen"] != "w-c"


async def test_bound_evicts_oldest_and_leaves_prefixes(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    chains = [chain(f"c{i}", 10) for i in range(4)]
    evicted = 0
    for i, c in enumerate(chains):
        evicted += (await record(st, ks, "w-a", c, f"r{i}", cap=16))[1]
        await asyncio.sleep(0.003)  # distinct milliseconds: an order of use
    assert evicted == 40 - 16
    found = [(await route(st, ks, c, f"q{i}"))["matches"][0] for i, c in enumerate(chains)]
    assert found == [0, 0, 6, 10]  # the newest chain whole, the one before its first blocks
    r = await route(st, ks, chain("c9", 30), "q9", start=0, cap=16, waiting=(0, 50, 50))
    assert r["chosen"] == "w-a" and r["evicted"] > 0  # recording at routing time keeps the bound too


async def test_feedback_drops_what_the_worker_evicted(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    older, old, new = chain("older", 10), chain("old", 10), chain("new", 10)
    await record(st, ks, "w-a", older, "r0")
    await asyncio.sleep(0.003)
    await record(st, ks, "w-a", old, "r1")
    await asyncio.sleep(0.003)
    await record(st, ks, "w-a", new, "r2")
    await asyncio.sleep(0.003)
    r = await route(st, ks, old, "r3", waiting=(0, 50, 50))
    assert r["chosen"] == "w-a" and r["matches"][0] == 10 and r["last_use"]
    # the worker reported far less than the 10 blocks predicted: it evicted old's blocks, and with
    # them everything used before (older); new was used later and stays, old was just used again
    stale, _ = await record(st, ks, "w-a", old, "r3", stale_before=r["last_use"])
    assert stale == 10  # older, whole; old was re-scored by r3 and stays
    found = [(await route(st, ks, c, f"q{i}", waiting=(0, 50, 50)))["matches"][0]
             for i, c in enumerate((older, new))]
    assert found == [0, 10]


async def test_purge_forgets_a_worker(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    c = chain("c", 5)
    await record(st, ks, "w-a", c, "r1")
    await route(st, ks, c, "r2")
    dropped = await st.run(PURGE, [ks.prefix_index(MODEL, "w-a"), ks.inflight(MODEL, "w-a"), ks.work(MODEL, "w-a")],
                           [])
    assert int(dropped) == 5
    r = await route(st, ks, c, "r3")
    assert r["matches"] == [0, 0, 0] and r["inflight"] == [0, 0, 0]
