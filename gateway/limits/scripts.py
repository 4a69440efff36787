"""The limiter's two shared-state scripts, as Lua for Redis and as Python twins for ``MemoryState``.

``limit_reserve`` checks and reserves every limit of a request at once; ``limit_settle`` releases the
concurrency lease and moves the token reservation to the real usage, once per request id (a replayed
settling finds the request's settled marker); ``limit_renew`` extends the leases of requests still in
flight. The Lua files hold the full
description of arguments and results; the twins below follow them line by line (same float
operations in the same order, so both stores give the same answers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gateway.state.base import MemoryData, Script

# Windows of the three token buckets, in ARGV order: requests/min, tokens/min, tokens/day.
WINDOWS_MS = (60_000, 60_000, 86_400_000)
_FIELDS = ("r", "t", "d")
CONCURRENCY_RETRY_MS = 1000
# How long a request's settled marker lives: far longer than a settling is ever sent again (the
# Forwarder's retry follows the failed attempt at once), short enough to keep Redis small.
SETTLED_MARKER_MS = 60_000


def reserve(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> list[int]:
    now = int(args[0]) or now_ms
    request_id = str(args[1])
    lease = int(args[2])
    tokens = int(args[3])
    limits = args[4:12]
    cost = (1, tokens, tokens)
    admitted, failed, worst = 1, 0, 0
    states: list[tuple[list[float], dict[str, Any] | None, dict[str, float] | None, int]] = []
    for s in (0, 1):
        base = 4 * s
        used = [0.0, 0.0, 0.0]
        h: dict[str, Any] | None = None
        z: dict[str, float] | None = None
        conc = 0
        if limits[base] > 0 or limits[base + 1] > 0 or limits[base + 2] > 0:
            h = data.hash(keys[2 * s])
            # The in-process store holds the floats this twin wrote (Redis holds their %.17g strings).
            ts = h.get("ts", now)
            elapsed = now - ts if now > ts else 0
            for i in range(3):
                limit = limits[base + i]
                if limit <= 0:
                    continue
                u = h.get(_FIELDS[i], 0.0) - elapsed * limit / WINDOWS_MS[i]
                if u < 0.0:
                    u = 0.0
                retry = 0
                if cost[i] > limit:
                    retry = -1
                elif u + cost[i] > limit:
                    retry = math.ceil((u + cost[i] - limit) * WINDOWS_MS[i] / limit)
                if retry != 0:
                    admitted = 0
                    if retry == -1 or (worst != -1 and retry > worst):
                        worst, failed = retry, base + i + 1
                used[i] = u
        climit = limits[base + 3]
        if climit > 0:
            z = data.zset(keys[2 * s + 1])
            expired = [m for m, score in z.items() if score <= now]
            for member in expired:
                del z[member]
            conc = len(z)
            if conc + 1 > climit:
                admitted = 0
                if worst != -1 and worst < CONCURRENCY_RETRY_MS:
                    worst, failed = CONCURRENCY_RETRY_MS, base + 4
        states.append((used, h, z, conc))

    out: list[int] = []
    for s in (0, 1):
        base = 4 * s
        used, h, z, conc = states[s]
        ttl = 1000
        for i in range(3):
            limit = limits[base + i]
            if limit > 0:
                if admitted:
                    used[i] += cost[i]
                reset = math.ceil(used[i] * WINDOWS_MS[i] / limit)
                if reset > ttl:
                    ttl = reset
                remaining = math.floor(limit - used[i])
                out += (remaining if remaining > 0 else 0, reset)
            else:
                out += (0, 0)
        climit = limits[base + 3]
        if z is not None and admitted:
            z[request_id] = now + lease
            data.expire(keys[2 * s + 1], now_ms + lease)
            conc += 1
        out += (climit - conc if climit > conc else 0, 0)
        if h is not None and admitted:
            h.update(r=used[0], t=used[1], d=used[2], ts=now)
            data.expire(keys[2 * s], now_ms + ttl + 1000)
    return [admitted, failed, worst, *out]


def first_settling(data: MemoryData, marker: str, ttl_ms: int, now_ms: int) -> bool:
    """``SET marker 1 NX PX ttl_ms``: True for the first settling of a request, False for a replay."""
    holder = data.value(marker)
    if "v" in holder:
        return False
    holder["v"] = b"1"
    data.expire(marker, now_ms + ttl_ms)
    return True


def settle(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> int:
    if not first_settling(data, keys[4], int(args[11]), now_ms):
        return 0
    now = int(args[0]) or now_ms
    request_id = str(args[1])
    delta = int(args[2])
    limits = args[3:11]
    released = 0
    for s in (0, 1):
        base = 4 * s
        if limits[base + 3] > 0 and data.zset(keys[2 * s + 1]).pop(request_id, None) is not None:
            released += 1
        if delta != 0 and (limits[base + 1] > 0 or limits[base + 2] > 0):
            h = data.hash(keys[2 * s])
            ts = h.get("ts", now)
            elapsed = now - ts if now > ts else 0
            used = [0.0, 0.0, 0.0]
            ttl = 1000
            for i in range(3):
                limit = limits[base + i]
                if limit <= 0:
                    continue
                u = h.get(_FIELDS[i], 0.0) - elapsed * limit / WINDOWS_MS[i]
                if u < 0.0:
                    u = 0.0
                if i > 0:
                    u += delta
                    if u < 0.0:
                        u = 0.0
                reset = math.ceil(u * WINDOWS_MS[i] / limit)
                if reset > ttl:
                    ttl = reset
                used[i] = u
            h.update(r=used[0], t=used[1], d=used[2], ts=now)
            data.expire(keys[2 * s], now_ms + ttl + 1000)
    return released


def renew(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> int:
    now = int(args[0]) or now_ms
    lease = int(args[1])
    z = data.zset(keys[0])
    extended = 0
    for member in args[2:]:
        request_id = str(member)
        if request_id in z and z[request_id] != now + lease:
            z[request_id] = now + lease
            extended += 1
    if extended > 0:
        data.expire(keys[0], now_ms + lease)
    return extended


RESERVE = Script.load("limit_reserve", reserve)
SETTLE = Script.load("limit_settle", settle)
RENEW = Script.load("limit_renew", renew)
