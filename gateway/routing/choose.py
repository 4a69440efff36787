"""The routing rule, as a pure function (the Lua script ``prefix_route.lua`` implements the same rule).

Inputs, one entry per candidate worker: ``matches`` (leading blocks of the request the worker is
believed to hold), ``loads`` (requests in flight there, counted across every gateway replica, plus the
worker's own scraped ``vllm:num_requests_waiting``) and ``kv`` (scraped ``vllm:kv_cache_usage_perc``).

1. *Bounded load.* A worker is eligible when one more request keeps it within
   ``bound = max(load_factor x (total load + 1) / workers, least load + load_slack)`` and its KV usage is
   below ``kv_limit`` (if that leaves nobody, the KV condition is dropped; then the load bound).
   This is consistent hashing with bounded loads applied to cache affinity: a hot shared prefix fills
   its worker up to the bound and then spills to the others, which then hold the prefix too.
2. *Affinity.* A conversation hint (``x-grok-conv-id``, ``x-session-id``, ``prompt_cache_key``,
   ``user``, or the inferred session) bound to a worker keeps the request there while that worker is
   eligible under the same bound with ``affinity_slack`` in place of ``load_slack`` (None: the load
   slack). A wider affinity slack keeps a bound conversation home through a short queue (moving it
   recomputes its whole history) while new conversations and the cost rule still see the load slack.
   *First placement* (``work`` given, only for a request that opens a conversation no binding knows
   yet): in step 3 each worker's recent work (the blocks of prefill routed there lately, decayed) weighs
   ``work_weight`` blocks a block, so a new conversation goes where the recent prefill was least unless
   a shared prefix it matches elsewhere outweighs the difference. Bound conversations never see it (it
   is no load: it does not move anyone).
3. *Cost.* Otherwise the eligible worker with the lowest cost wins, in blocks of prefill work:
   ``cost = (blocks not matched there) + load_cost x load`` (NVIDIA Dynamo's form: blocks to prefill plus
   the work already queued, with ``load_cost`` the blocks one request in flight is worth). A conversation
   with a long private prefix stays put through ordinary load swings (moving it means recomputing it);
   a new conversation that only shares a system prompt goes where the queue is shortest; a hot shared
   prefix spreads as soon as its worker's queue outweighs one copy of the prefix. Ties go to the lower
   KV usage, then to the first in a rotation that starts at ``start`` (advanced per request).

With ``prefix=False`` matches are ignored: plain least-loaded with the same load accounting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RuleParams:
    load_factor: float = 2.0
    load_slack: float = 2.0
    kv_limit: float = 0.95
    load_cost: float = 8.0  # blocks of prefill one request in flight is worth
    affinity_slack: float | None = None  # the slack a bound conversation's worker is held to; None: load_slack
    work_weight: float = 0.25  # in a new conversation's cost a block of a worker's recent prefill weighs this

    def keep_slack(self) -> float:
        return self.load_slack if self.affinity_slack is None else self.affinity_slack


def eligible(loads: Sequence[float], kv: Sequence[float], allowed: Sequence[bool], params: RuleParams,
             slack: float | None = None) -> list[bool]:
    """Who passes the load bound (with ``slack``, default ``params.load_slack``) and the KV limit."""
    n = sum(1 for a in allowed if a)
    if n == 0:
        return [False] * len(loads)
    total = 0.0
    least = -1.0
    for i, a in enumerate(allowed):
        if a:
            total += loads[i]
            if least < 0 or loads[i] < least:
                least = loads[i]
    bound = max(params.load_factor * (total + 1) / n, least + (params.load_slack if slack is None else slack))
    under = [a and loads[i] + 1 <= bound for i, a in enumerate(allowed)]
    both = [u and kv[i] < params.kv_limit for i, u in enumerate(under)]
    if any(both):
        return both
    if any(under):
        return under
    return list(allowed)


def pick(matches: Sequence[int], loads: Sequence[float], kv: Sequence[float], allowed: Sequence[bool],
         params: RuleParams, start: int, affinity: int = -1, prefix: bool = True,
         work: Sequence[float] | None = None) -> tuple[int, bool]:
    """The chosen candidate's index (-1: none allowed) and whether the affinity hint decided it;
    ``work``: each candidate's recent prefill in blocks (decayed), for a request that opens an unbound
    conversation."""
    ok = eligible(loads, kv, allowed, params)
    if 0 <= affinity < len(ok):
        keep = params.keep_slack()
        held = ok if keep == params.load_slack else eligible(loads, kv, allowed, params, keep)
        if held[affinity]:
            return affinity, True
    n = len(ok)
    best = -1
    best_cost = 0.0
    for k in range(n):
        i = (start + k) % n
        if not ok[i]:
            continue
        cost = params.load_cost * loads[i] - (matches[i] if prefix else 0)
        if work is not None:
            cost += params.work_weight * work[i]
        if best < 0 or cost < best_cost or (cost == best_cost and kv[i] < kv[best]):
            best, best_cost = i, cost
    return best, False
