"""Why a request would go where it goes: the routing decision for one request, spelled out.

For the admin-only ``POST /admin/routing/explain`` (off unless ``GATEWAY_ROUTING_EXPLAIN``): the same
prefix key, salt and conversation hint as the request path (``PrefixRouter._prepare``), then a
read-only look at the shared index (``prefix_peek``: the matched blocks and in-flight requests per
candidate, the worker the hint is bound to), then the rule of ``choose.py`` applied to those figures
with every intermediate kept: the load bound, who is eligible and why not, each candidate's cost, and
the reason the winner won. Nothing on the request path calls this module: explaining costs nothing
when it is off, and changes no routing state when it is on (no reservation, no recording).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.routing.choose import RuleParams, eligible
from gateway.routing.index import matched_blocks, work_now
from gateway.state.base import MemoryData, Script

_H = 8


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _peek_py(store: MemoryData, keys: Sequence[str], args: Sequence[Any], now: int) -> list[Any]:
    hashes: bytes = args[0]
    use_prefix = _s(args[1]) == "1"
    has_hint = _s(args[2]) == "1"
    n = int(args[3]) if len(args) > 3 else (len(keys) - 1) // 2
    halflife = int(float(args[4])) if len(args) > 4 else 0
    w0 = 1 + 2 * n
    blocks = len(hashes) // _H
    matches: list[int] = []
    flights: list[int] = []
    for i in range(n):
        flights.append(sum(1 for deadline in store.zset(keys[2 + 2 * i]).values() if deadline > now))
        matches.append(matched_blocks(store.zset(keys[1 + 2 * i]), hashes, blocks) if use_prefix and blocks else 0)
    bound_to = store.value(keys[0]).get("v", "") if has_hint else ""
    work = [repr(work_now(store, keys[w0 + i], now, halflife)) if halflife > 0 else "0" for i in range(n)]
    return [bound_to, *matches, *flights, *work]


PEEK = Script.load("prefix_peek", _peek_py, ("prefix_match", "prefix_work"))


@dataclass(slots=True)
class Candidate:
    worker: str
    matched_blocks: int
    matched_bytes: int
    inflight: int
    waiting: float
    load: float
    kv_usage: float
    recent_work: float  # blocks of prefill routed here lately, decayed (counted for a new conversation only)
    eligible: bool
    # load_cost x load - matched blocks (+ a first placement's recent-work term); lower wins; None: not eligible
    cost: float | None
    note: str = ""


@dataclass(slots=True)
class Decision:
    policy: str
    blocks: int  # blocks of the request's prefix key
    prompt_bytes: int
    load_cost_blocks: float
    load_factor: float
    load_slack: float
    affinity_slack: float  # the bound's slack for the worker the hint is bound to
    kv_limit: float
    bound: float  # a worker is eligible while load + 1 <= bound
    hint: bool  # a conversation hint was sent
    bound_worker: str | None  # the worker that hint is bound to
    work_halflife_s: float  # first placements count each worker's recent work (0: off)
    work_weight: float
    chosen: str | None
    reason: str
    candidates: list[Candidate] = field(default_factory=list)


def decide(ids: Sequence[str], matches: Sequence[int], flights: Sequence[int], waiting: Sequence[float],
           kv: Sequence[float], matched_bytes: Sequence[int], rule: RuleParams, bound_to: str | None,
           prefix: bool, work: Sequence[float] | None = None) -> tuple[float, list[Candidate], str | None, str]:
    """The rule of ``choose.pick`` with its reasons (ties broken by KV usage, then by position here:
    the request path rotates the tie order per request); ``work``: each worker's recent prefill (blocks,
    decayed), for a request that opens an unbound conversation (the first placement counts it)."""
    n = len(ids)
    loads = [flights[i] + waiting[i] for i in range(n)]
    if n == 0:
        return 0.0, [], None, "no healthy worker serves this model"
    bound = max(rule.load_factor * (sum(loads) + 1) / n, min(loads) + rule.load_slack)
    under = [loads[i] + 1 <= bound for i in range(n)]
    both = [under[i] and kv[i] < rule.kv_limit for i in range(n)]
    ok = both if any(both) else under if any(under) else [True] * n
    held_bound = max(rule.load_factor * (sum(loads) + 1) / n, min(loads) + rule.keep_slack())
    held = eligible(loads, kv, [True] * n, rule, rule.keep_slack())
    recent = [0.0] * n if work is None else list(work)
    if bound_to is not None and bound_to in ids and held[ids.index(bound_to)]:
        work = None  # affinity decides before the first placement could
    out: list[Candidate] = []
    for i in range(n):
        note = ""
        if not under[i]:
            note = f"over the load bound ({loads[i]:g} + 1 > {bound:.2f})"
        elif not both[i] and any(both):
            note = f"KV usage {kv[i]:.2f} >= kv_limit {rule.kv_limit:g}"
        cost = rule.load_cost * loads[i] - (matches[i] if prefix else 0) if ok[i] else None
        if cost is not None and work is not None:
            cost += rule.work_weight * work[i]
        out.append(Candidate(ids[i], matches[i], matched_bytes[i], flights[i], waiting[i], loads[i], kv[i], recent[i],
                             ok[i], cost, note))
    if bound_to is not None and bound_to in ids:
        i = ids.index(bound_to)
        if held[i]:
            return bound, out, bound_to, (f"conversation hint bound to {bound_to}, which is within the affinity bound "
                                          f"(load {loads[i]:g} + 1 <= {held_bound:.2f}): affinity keeps it there")
    best = -1
    for i in range(n):
        c = out[i]
        if c.cost is None:
            continue
        if best < 0 or c.cost < (out[best].cost or 0.0) or (c.cost == out[best].cost and kv[i] < kv[best]):
            best = i
    if best < 0:
        return bound, out, None, "no eligible worker"
    w = out[best]
    others = sorted((c for c in out if c.cost is not None and c is not w), key=lambda c: c.cost or 0.0)
    reason = (f"lowest cost {w.cost:.2f} = {rule.load_cost:.2f} x load {w.load:g} - {w.matched_blocks if prefix else 0}"
              f" matched blocks")
    if others:
        r = others[0]
        reason += (f"; runner-up {r.worker} at {r.cost:.2f} (load {r.load:g}, "
                   f"{r.matched_blocks if prefix else 0} matched blocks)")
    if work is not None:
        reason += (f" + {rule.work_weight:g} x {w.recent_work:.1f} blocks of recent prefill (a new conversation's "
                   "first placement)")
    if bound_to is not None and bound_to in ids and not held[ids.index(bound_to)]:
        reason = (f"the hinted worker {bound_to} is over the affinity bound ({held_bound:.2f}), so the cost "
                  "decided: " + reason)
    return bound, out, w.worker, reason
