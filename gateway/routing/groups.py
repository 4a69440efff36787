"""Worker groups: one model's routing state split over G hash-tagged groups (``GATEWAY_ROUTING_GROUPS``), so
that no single Redis slot (hence no single master) carries every routed request of a model.

A worker belongs to group ``xxh3(worker id) mod G`` (stable while workers come and go); its prefix index
and in-flight set carry the group's hash tag (``keyspace.route_tag``). A request is routed inside one
group: ``prefix_route`` runs on that group's workers only (1/G of the lookups, one slot, still one script
call in the one pre-request round trip).

The group is chosen here, on this replica, from what it already knows (no extra round trip):

* *Home.* Rendezvous hashing of the request's first block (the prefix's root: a conversation's turns
  and a shared system prompt's requests all start with it), weighted by the groups' sizes, so each
  group gets a share of the prefixes in proportion to its workers. Without a block (prompt shorter
  than one block, or a policy that does not hash prefixes) the conversation hint seeds it; without
  either, the least loaded group.
* *Spill.* The bounded-load rule of ``choose.py`` applied to groups, per worker: the home group is
  saturated when one more request takes its mean load per worker over
  ``max(load_factor x (fleet load + 1) / fleet workers, least group's mean + load_slack)``, or when every
  one of its workers is over ``kv_limit`` while another group has room. A saturated home spills to the
  least loaded group that is not saturated (where the prefix then gets recorded too).
* *Loads* are what this replica last saw of each worker: the in-flight counts every ``prefix_route``
  returns for its group's workers (all replicas' requests), plus the worker's scraped queue length.
  A sighting older than ``fresh_ms`` no longer counts, so a group this replica stopped routing to is
  tried again (and seen again) once its figures are stale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xxhash import xxh3_64_intdigest

from gateway.routing.choose import RuleParams
from gateway.routing.worker import Worker


@dataclass(frozen=True, slots=True)
class GroupChoice:
    group: int
    workers: list[Worker]
    spilled: bool  # the home group was saturated


def _monotonic_ms() -> float:
    return time.monotonic() * 1000.0


class RoutingGroups:
    def __init__(self, count: int, rule: RuleParams, fresh_ms: float = 2000.0,
                 clock: Callable[[], float] = _monotonic_ms) -> None:
        self.count = max(1, count)
        self._rule = rule
        self._fresh_ms = fresh_ms
        self._clock = clock
        self._of: dict[str, int] = {}
        self._seen: dict[str, tuple[int, float]] = {}  # worker id -> (in flight, when seen)

    def of(self, worker_id: str) -> int:
        """The worker's group (0 with one group: the keys of an ungrouped deployment)."""
        if self.count == 1:
            return 0
        found = self._of.get(worker_id)
        if found is None:
            found = self._of[worker_id] = xxh3_64_intdigest(worker_id.encode()) % self.count
        return found

    def saw(self, ids: Sequence[str], flights: Sequence[int], chosen: int) -> None:
        """A prefix_route result: its workers' in-flight counts (before this request), the chosen index."""
        now = self._clock()
        for i, (wid, count) in enumerate(zip(ids, flights, strict=True)):
            self._seen[wid] = (count + (1 if i == chosen else 0), now)

    def load(self, worker: Worker, now: float) -> float:
        seen = self._seen.get(worker.id)
        flights = seen[0] if seen is not None and now - seen[1] <= self._fresh_ms else 0
        return flights + worker.metrics.get("waiting", 0.0)

    def choose(self, candidates: list[Worker], seed: bytes | None, turn: int) -> GroupChoice:
        """The group to route in and its candidates (every candidate, in order, with one group)."""
        if self.count == 1:
            return GroupChoice(0, candidates, False)
        groups: dict[int, list[Worker]] = {}
        for w in candidates:
            groups.setdefault(self.of(w.id), []).append(w)
        if len(groups) == 1:
            only = next(iter(groups))
            return GroupChoice(only, groups[only], False)
        now = self._clock()
        order = sorted(groups)
        mean: dict[int, float] = {}
        room: dict[int, bool] = {}
        total = 0.0
        for g in order:
            loads = [self.load(w, now) for w in groups[g]]
            total += sum(loads)
            mean[g] = sum(loads) / len(loads)
            room[g] = any(w.metrics.get("kv", 0.0) < self._rule.kv_limit for w in groups[g])
        bound = max(self._rule.load_factor * (total + 1) / len(candidates),
                    min(mean.values()) + self._rule.load_slack)
        any_room = any(room.values())

        def fits(g: int) -> bool:
            return mean[g] + 1 / len(groups[g]) <= bound and (room[g] or not any_room)

        if seed is None:
            start = turn % len(order)
            rotated = order[start:] + order[:start]
            best = min(rotated, key=lambda g: (not fits(g), mean[g]))
            return GroupChoice(best, groups[best], False)
        home = max(order, key=lambda g: _weight(seed, g, len(groups[g])))
        if fits(home):
            return GroupChoice(home, groups[home], False)
        others = [g for g in order if g != home and fits(g)]
        if not others:
            return GroupChoice(home, groups[home], False)  # every group is saturated: stay with the cache
        at = order.index(home)
        rotated = [g for g in order[at + 1:] + order[:at] if g in others]
        best = min(rotated, key=lambda g: mean[g])
        return GroupChoice(best, groups[best], True)


def _weight(seed: bytes, group: int, size: int) -> float:
    """Weighted rendezvous score: the group with the highest wins; a group wins in proportion to ``size``."""
    u = (xxh3_64_intdigest(seed, group) + 0.5) / 2.0**64
    return -size / math.log(u)
