"""The shared prefix index and in-flight counts: the routing scripts and their in-process twins.

Per model and worker, a sorted set of block hashes (8 raw bytes) scored by last use, bounded to the
worker's KV capacity (oldest out first); per model and worker, a sorted set of the requests in flight
with their deadlines (so a replica that dies mid-request leaks nothing for long); per conversation hint,
the worker it was last routed to; per model and worker (opt-in), the blocks of prefill routed there
lately (decayed). ``prefix_route`` answers every candidate's match and load, chooses,
reserves and records in one call; ``prefix_record`` settles after the response (release, feedback);
``prefix_purge`` forgets a worker.
The Lua files in ``state/lua/`` and the functions here have the same semantics; the tests run both.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

from gateway.routing.choose import RuleParams, eligible, pick
from gateway.state.base import MemoryData, Script

_H = 8


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def matched_blocks(index: dict[Any, float], hashes: bytes, blocks: int) -> int:
    """How many leading blocks of ``hashes`` ``index`` holds (a block is only indexed with every block
    before it: the first block decides a miss, then a binary search). The Python twin of
    ``matched_blocks`` in prefix_match.lua (put before prefix_route.lua and prefix_peek.lua)."""
    if blocks == 0 or hashes[:_H] not in index:
        return 0
    lo, hi = 1, blocks
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if hashes[(mid - 1) * _H:mid * _H] in index:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _add_blocks(store: MemoryData, key: str, hashes: bytes, cap: int, now: int, ttl: int, first: int = 0,
                used: int | None = None) -> int:
    """Record the blocks from ``first`` on (scores as in the Lua files, at the millisecond ``used``, else
    ``now``), evict down to ``cap``; returns the evicted count."""
    index: dict[Any, float] = store.zset(key)
    base = (now if used is None else used) * 4096
    for i in range(first, len(hashes) // _H):
        index[hashes[i * _H:(i + 1) * _H]] = float(base + 4095 - min(i, 4095))
    evicted = 0
    size = len(index)
    if size > cap + cap // 16:
        evicted = size - cap
        for member in heapq.nsmallest(evicted, index, key=index.__getitem__):
            del index[member]
    store.expire(key, now + ttl)
    return evicted


def work_now(store: MemoryData, key: str, now: int, halflife: int) -> float:
    """A worker's recent work (blocks of predicted prefill) decayed to ``now``: halved every ``halflife`` ms.
    The Python twin of ``work_now`` in prefix_work.lua (put before prefix_route.lua and prefix_peek.lua)."""
    entry = store.hash(key)
    if "v" not in entry:
        return 0.0
    return float(entry["v"]) * math.pow(0.5, max(0, now - int(entry["t"])) / halflife)


def add_work(store: MemoryData, key: str, blocks: int, now: int, halflife: int) -> None:
    """``blocks`` more of predicted prefill routed to the worker of ``key`` now."""
    value = work_now(store, key, now, halflife) + blocks
    entry = store.hash(key)
    entry["v"], entry["t"] = repr(value), str(now)
    store.expire(key, now + halflife * 16)


def _route_py(store: MemoryData, keys: Sequence[str], args: Sequence[Any], now: int) -> list[int]:
    hashes: bytes = args[0]
    use_prefix = _s(args[1]) == "1"
    params = RuleParams(float(args[2]), float(args[3]), float(args[4]), float(args[5]), float(args[13]),
                        work_weight=float(args[16]))
    start = int(args[6])
    rid = _s(args[7])
    inflight_ttl = int(args[8])
    affinity_ttl = int(args[9])
    has_hint = _s(args[10]) == "1"
    index_ttl = int(args[11])
    refresh = int(args[12])
    opens = _s(args[14]) == "1"
    halflife = int(float(args[15]))
    f = 17
    n = (len(args) - f) // 4
    w0 = 1 + 2 * n  # keys[w0 + i]: candidate i's recent work
    blocks = len(hashes) // _H
    ids: list[str] = []
    loads: list[float] = []
    kv: list[float] = []
    matches: list[int] = []
    flights: list[int] = []
    for i in range(n):
        ids.append(_s(args[f + 4 * i]))
        live = sum(1 for deadline in store.zset(keys[2 + 2 * i]).values() if deadline > now)
        flights.append(live)
        loads.append(live + float(args[f + 4 * i + 1]))
        kv.append(float(args[f + 4 * i + 2]))
        matches.append(matched_blocks(store.zset(keys[1 + 2 * i]), hashes, blocks) if use_prefix and blocks else 0)
    affinity = -1
    bound_to = store.value(keys[0]).get("v") if has_hint else None
    if bound_to is not None and bound_to in ids:
        affinity = ids.index(bound_to)
    work: list[float] | None = None
    if halflife > 0 and opens and bound_to is None:
        work = [work_now(store, keys[w0 + i], now, halflife) for i in range(n)]
    chosen, by_affinity = pick(matches, loads, kv, [True] * n, params, start, affinity, use_prefix, work)
    evicted = 0
    last_use: Any = ""
    if chosen >= 0:
        inflight = store.zset(keys[2 + 2 * chosen])
        for member in [m for m, deadline in inflight.items() if deadline <= now]:
            del inflight[member]
        inflight[rid] = now + inflight_ttl
        store.expire(keys[2 + 2 * chosen], now + inflight_ttl)
        if has_hint:
            store.value(keys[0])["v"] = ids[chosen]
            store.expire(keys[0], now + affinity_ttl)
        if halflife > 0 and blocks > matches[chosen]:
            add_work(store, keys[w0 + chosen], blocks - matches[chosen], now, halflife)
        if use_prefix and blocks:
            m = matches[chosen]
            first, used = 0, None
            if m:
                found = store.zset(keys[1 + 2 * chosen]).get(hashes[(m - 1) * _H:m * _H])  # type: ignore[call-overload]
                last_use = "" if found is None else repr(found)
                if found is not None and int(found) // 4096 >= now - refresh:  # recent: write only the new
                    first, used = m, int(found) // 4096
                    last_use = repr(float(used * 4096 + 4095 - min(blocks - 1, 4095) - 1))
            if first < blocks:
                evicted = _add_blocks(store, keys[1 + 2 * chosen], hashes, int(args[f + 4 * chosen + 3]), now,
                                      index_ttl, first, used)
    read = [""] * n
    if work is not None:  # the script reads the work of eligible candidates only
        ok = eligible(loads, kv, [True] * n, params)
        read = [f"{w:.3f}" if ok[i] else "" for i, w in enumerate(work)]
    return [chosen, int(by_affinity), evicted, last_use, *matches, *flights, *read]


def _record_py(store: MemoryData, keys: Sequence[str], args: Sequence[Any], now: int) -> list[int]:
    hashes: bytes = args[0]
    cap = int(args[1])
    rid = _s(args[2])
    threshold = _s(args[3])
    record = _s(args[4]) == "1"
    ttl = int(args[5])
    index: dict[Any, float] = store.zset(keys[0])
    store.zset(keys[1]).pop(rid, None)
    stale = evicted = 0
    if threshold:
        limit = float(threshold)
        old = [member for member, score in index.items() if score <= limit]
        for member in old:
            del index[member]
        stale = len(old)
    if record and len(hashes) >= _H:
        evicted = _add_blocks(store, keys[0], hashes, cap, now, ttl)
    return [stale, evicted]


def _purge_py(store: MemoryData, keys: Sequence[str], args: Sequence[Any], now: int) -> int:
    index = store.zset(keys[0])
    dropped = len(index)
    index.clear()
    store.zset(keys[1]).clear()
    store.delete(keys[2])
    return dropped


ROUTE = Script.load("prefix_route", _route_py, ("prefix_match", "prefix_write", "prefix_work"))
RECORD = Script.load("prefix_record", _record_py, ("prefix_write",))
PURGE = Script.load("prefix_purge", _purge_py)
