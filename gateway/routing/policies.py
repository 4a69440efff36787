"""Routing policies, one class each, behind one small interface (as limits does with its strategies).

``prefix_aware`` (the default) and ``least_loaded`` ask the shared index in the pre-request round trip
(the ``prefix_route`` script applies the rule of ``choose.py`` and reserves the chosen worker's
in-flight slot); ``prefix_aware`` also matches and records prompt prefixes. ``session_hash`` and
``round_robin`` need no shared state: they are the references the others are measured against.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from xxhash import xxh3_64_intdigest

from gateway.routing.choose import RuleParams, pick
from gateway.routing.prefix import PrefixKey
from gateway.routing.stats import RoutingStats
from gateway.routing.worker import Worker


@dataclass(slots=True)
class RouteNote:
    """What the router keeps about one request between its calls (``Exchange.notes``)."""

    key: PrefixKey
    salt: str
    hint: str | None
    opens: bool = False  # may open a conversation (an explicit hint, or an inferred session's first turn)
    ids: list[str] = field(default_factory=list)
    result: int = -1  # index of the route script's result, -1 when nothing was queued
    reserved: str | None = None  # worker holding this request's shared in-flight slot
    matches: dict[str, int] = field(default_factory=dict)
    predicted_blocks: int = 0
    settle_result: int = -1  # index of the record script's result in the post-request round trip
    last_use: str = ""  # the reserved worker's score of the deepest matched block, before this request
    chosen: Worker | None = None  # the worker the last choice returned


@dataclass(slots=True)
class Choice:
    """One choice's inputs: the round trip's result for this request, the candidates and the rule."""

    note: RouteNote
    results: list[Any]
    candidates: list[Worker]  # healthy workers serving the model
    exclude: Collection[str]  # already tried
    next_turn: Callable[[], int]  # a rotation that advances on every use: ties go to its first worker
    rule: Callable[[], RuleParams]  # with the current load cost (built only when a choice is made here)
    stats: RoutingStats
    rng: random.Random

    @property
    def allowed(self) -> list[Worker]:
        return [w for w in self.candidates if w.id not in self.exclude]


class Policy(Protocol):
    name: str
    scripted: bool  # asks the shared index before the upstream call
    prefix: bool  # matches and records prompt prefixes

    def choose(self, c: Choice) -> Worker | None:
        """A worker among ``c.allowed`` (never empty), or None when the rule admits none."""
        ...


class RoundRobin:
    name = "round_robin"
    scripted = False
    prefix = False

    def choose(self, c: Choice) -> Worker | None:
        allowed = c.allowed
        return allowed[c.next_turn() % len(allowed)]


class SessionHash:
    """Rendezvous hashing on the conversation hint (or the first block, or random)."""

    name = "session_hash"
    scripted = False
    prefix = False

    def choose(self, c: Choice) -> Worker | None:
        allowed = c.allowed
        key = c.note.key
        seed = c.note.hint or (key.block(0).hex() if key.blocks else None)
        if seed is None:
            return allowed[c.rng.randrange(len(allowed))]
        return max(allowed, key=lambda w: xxh3_64_intdigest(w.id.encode(), xxh3_64_intdigest(seed.encode())))


class LeastLoaded:
    """The bounded-load rule on load alone: the script reserves the least loaded worker."""

    name = "least_loaded"
    scripted = True
    prefix = False

    def choose(self, c: Choice) -> Worker | None:
        if c.note.result < 0:  # nothing was asked (no candidates when the trip was planned)
            allowed = c.allowed
            return allowed[c.next_turn() % len(allowed)]
        return by_rule(c, prefix=self.prefix)


class PrefixAware(LeastLoaded):
    """The bounded-load rule weighing matched prefix blocks against load (``choose.py``)."""

    name = "prefix_aware"
    prefix = True


def make_policy(name: str) -> Policy:
    """The policy of that name (the settings validate it against ``POLICY_NAMES``)."""
    policies: tuple[Policy, ...] = (PrefixAware(), LeastLoaded(), SessionHash(), RoundRobin())
    for policy in policies:
        if policy.name == name:
            return policy
    raise ValueError(f"unknown routing policy {name!r}; one of {', '.join(POLICY_NAMES)}")


POLICY_NAMES = (PrefixAware.name, LeastLoaded.name, SessionHash.name, RoundRobin.name)


def by_rule(c: Choice, prefix: bool) -> Worker | None:
    """Take the script's pick; on a retry (or when the pool changed during the round trip) apply the
    same rule locally to the figures the script returned, without a shared reservation."""
    note, result, candidates, exclude = c.note, c.results[c.note.result], c.candidates, c.exclude
    n = len(note.ids)
    chosen, by_affinity = int(result[0]), int(result[1])
    matches = [int(m) for m in result[4:4 + n]]
    flights = [int(f) for f in result[4 + n:4 + 2 * n]]
    if not exclude:
        c.stats.index_evictions += int(result[2])
        last_use = result[3]
        note.last_use = last_use.decode() if isinstance(last_use, bytes) else str(last_use or "")
    note.matches = dict(zip(note.ids, matches, strict=True))
    by_id = {w.id: w for w in candidates}
    if chosen >= 0 and note.reserved is None:
        note.reserved = note.ids[chosen]
    if not exclude and chosen >= 0 and note.ids[chosen] in by_id:
        worker = by_id[note.ids[chosen]]
        if by_affinity:
            c.stats.affinity_hits += 1
    else:
        inflight = dict(zip(note.ids, flights, strict=True))
        loads = [inflight.get(w.id, 0) + w.metrics.get("waiting", 0.0) for w in candidates]
        kv = [w.metrics.get("kv", 0.0) for w in candidates]
        found = [note.matches.get(w.id, 0) for w in candidates]
        allowed = [w.id not in exclude for w in candidates]
        index, _ = pick(found, loads, kv, allowed, c.rule(), c.next_turn() % len(candidates), prefix=prefix,
                        work=_work_read(note.ids, result[4 + 2 * n:4 + 3 * n], candidates))
        if index < 0:
            return None
        worker = candidates[index]
    note.predicted_blocks = note.matches.get(worker.id, 0)
    if note.predicted_blocks:
        c.stats.prefix_hits += 1
    return worker


def _work_read(ids: list[str], cells: list[Any], candidates: list[Worker]) -> list[float] | None:
    """The recent work the script read for a first placement, per candidate (None: it read none, the
    request is bound or continues a conversation). A candidate it found over the load bound, whose work
    it did not read, counts the most any other had: no bonus for being unknown."""
    work = {wid: float(cell) for wid, cell in zip(ids, cells, strict=False) if cell not in ("", b"")}
    if not work:
        return None
    most = max(work.values())
    return [work.get(w.id, most) for w in candidates]


__all__ = ["POLICY_NAMES", "Choice", "LeastLoaded", "Policy", "PrefixAware", "RoundRobin", "RouteNote", "SessionHash",
           "by_rule", "make_policy"]
