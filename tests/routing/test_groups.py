"""Worker groups (GATEWAY_ROUTING_GROUPS): a model's routing state split over hash-tagged groups, the
group chosen per request from the prompt's first block, spilling when the home group is saturated."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import redis.asyncio as aioredis

from gateway.front.chat import ChatCompletions
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal
from gateway.routing.choose import RuleParams
from gateway.routing.groups import RoutingGroups
from gateway.routing.pool import WorkerPool
from gateway.routing.router import PrefixRouter, RouterConfig
from gateway.routing.worker import Worker
from gateway.state.base import Script, StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from tests.conftest import REDIS_URL

MODEL = "m"


class Clock:
    def __init__(self) -> None:
        self.ms = 1000.0

    def __call__(self) -> float:
        return self.ms


def workers(n: int) -> list[Worker]:
    out = []
    for i in range(n):
        w = Worker(f"w{i}", f"http://w{i}", "config", healthy=True, models=frozenset({MODEL}))
        w.metrics = {"waiting": 0.0, "kv": 0.3}
        out.append(w)
    return out


def test_one_group_keeps_todays_keys_and_groups_get_their_own_tag() -> None:
    ks = KeySpace("gw")
    assert ks.prefix_index(MODEL, "w1") == "gw:{rt:m}:idx:w1"  # an ungrouped deployment's keys, unchanged
    assert ks.prefix_index(MODEL, "w1", 0) == ks.prefix_index(MODEL, "w1")
    assert ks.inflight(MODEL, "w1", 3) == "gw:{rt#3:m}:inf:w1"
    assert ks.affinity(MODEL, "h", 2) == "gw:{rt#2:m}:aff:h"
    # no model name spells another model's group
    assert ks.route_tag("1:m", 0) != ks.route_tag(MODEL, 1)
    assert all(ks.route_tag(MODEL, g).startswith(ks.routing_prefix()) for g in range(4))
    assert RoutingGroups(1, RuleParams()).of("anything") == 0


def test_the_home_group_follows_the_first_block_weighted_by_size() -> None:
    g = RoutingGroups(4, RuleParams(), clock=Clock())
    fleet = workers(64)
    sizes = {k: sum(1 for w in fleet if g.of(w.id) == k) for k in range(4)}
    assert all(sizes.values())
    homes: dict[int, int] = dict.fromkeys(range(4), 0)
    for i in range(4000):
        root = i.to_bytes(8, "little")
        first = g.choose(fleet, root, turn=i)
        assert not first.spilled and all(g.of(w.id) == first.group for w in first.workers)
        assert g.choose(fleet, root, turn=i + 7).group == first.group  # stable: the turn plays no part
        homes[first.group] += 1
    for k in range(4):  # each group's share of prefixes in proportion to its workers
        assert abs(homes[k] / 4000 - sizes[k] / 64) < 0.04, (homes, sizes)
    # a worker leaving moves only prefixes of its own group
    before = {i: g.choose(fleet, i.to_bytes(8, "little"), 0).group for i in range(500)}
    gone = fleet[0]
    after = {i: g.choose(fleet[1:], i.to_bytes(8, "little"), 0).group for i in range(500)}
    moved = [i for i in before if before[i] != after[i]]
    assert all(before[i] == g.of(gone.id) for i in moved) and len(moved) < 60


def test_a_saturated_home_spills_to_the_least_loaded_group_and_comes_back() -> None:
    clock = Clock()
    g = RoutingGroups(4, RuleParams(), fresh_ms=2000, clock=clock)
    fleet = workers(32)
    root = b"rootblok"
    home = g.choose(fleet, root, 0).group
    members = [w for w in fleet if g.of(w.id) == home]
    g.saw([w.id for w in members], [12] * len(members), -1)  # 12 in flight on each of its workers
    loads = {}
    for k in range(4):
        if k != home:
            others = [w for w in fleet if g.of(w.id) == k]
            g.saw([w.id for w in others], [k] * len(others), -1)
            loads[k] = k
    spill = g.choose(fleet, root, 0)
    assert spill.spilled and spill.group == min(loads, key=lambda k: loads[k])
    clock.ms += 2001  # the home group's figures went stale: it is tried again (and seen again)
    assert g.choose(fleet, root, 0).group == home
    # the scraped queue alone also saturates it
    for w in members:
        w.metrics["waiting"] = 12.0
    assert g.choose(fleet, root, 0).spilled
    # every group as loaded: stay home, with the cache
    for w in fleet:
        w.metrics["waiting"] = 12.0
    assert g.choose(fleet, root, 0).group == home


def test_a_home_whose_kv_is_full_spills_while_another_group_has_room() -> None:
    g = RoutingGroups(4, RuleParams(kv_limit=0.9), clock=Clock())
    fleet = workers(32)
    root = b"rootblok"
    home = g.choose(fleet, root, 0).group
    for w in fleet:
        if g.of(w.id) == home:
            w.metrics["kv"] = 0.97
    assert g.choose(fleet, root, 0).spilled
    for w in fleet:
        w.metrics["kv"] = 0.97
    assert g.choose(fleet, root, 0).group == home



def conversation(seed: int, turns: int) -> bytes:
    messages: list[dict[str, Any]] = [{"role": "system", "content": f"system prompt {seed} " * 200}]
    for t in range(turns):
        messages += [{"role": "user", "content": f"question {t} " * 60}, {"role": "assistant", "content": "ok " * 50}]
    messages.append({"role": "user", "content": "next " * 60})
    return orjson.dumps({"model": MODEL, "messages": messages, "max_tokens": 8})


async def route_one(router: PrefixRouter, st: StateStore, pool: WorkerPool, raw: bytes, rid: str,
                    org: str = "o") -> tuple[Worker, list[str]]:
    ex = Exchange(request_id=rid, principal=Principal("k", org, "o", "salt", True),
                  request=ChatCompletions().parse(raw), path="/v1/chat/completions", payload=raw)
    trip = st.round_trip()
    router.plan(ex, trip)
    keys: list[str] = [k for _, ks, _ in trip._calls for k in ks]  # type: ignore[attr-defined]
    results = await trip.execute()
    router.observe(ex, results)
    worker = router.choose(ex, results, pool.candidates(MODEL), ())
    assert worker is not None
    ex.worker, ex.status = worker, 200
    ex.usage = {"prompt_tokens": 2000, "completion_tokens": 8, "prompt_tokens_details": {"cached_tokens": 2000}}
    settle = st.round_trip()
    router.finish(ex, settle)
    router.settled(ex, await settle.execute())
    return worker, keys


async def _pool(n: int) -> WorkerPool:
    pool = WorkerPool(None)  # type: ignore[arg-type]  # never checks or scrapes here
    for i in range(n):
        w = pool.add(f"http://127.0.0.1:{21000 + i}", "config")
        w.healthy, w.models = True, frozenset({MODEL})
        w.metrics = {"kv_tokens": 500_000.0, "waiting": 0.0, "kv": 0.3}
    return pool


async def test_a_conversation_stays_in_its_group_on_both_stores(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    pool = await _pool(16)
    router = PrefixRouter(pool, ks, MemoryState(), st, RouterConfig(groups=4))
    tags: dict[int, set[str]] = {}
    served: dict[int, set[str]] = {}
    for turn in range(4):
        for conv in range(6):
            worker, keys = await route_one(router, st, pool, conversation(conv, turn), f"r{turn}-{conv}")
            tag = {k[k.index("{"):k.index("}") + 1] for k in keys}
            assert len(tag) == 1  # one call, one slot
            tags.setdefault(conv, set()).update(tag)
            served.setdefault(conv, set()).add(worker.id)
            assert router.groups.of(worker.id) == router.groups.of(next(iter(served[conv])))
    assert all(len(t) == 1 for t in tags.values())  # every turn of a conversation in one group
    assert len({next(iter(t)) for t in tags.values()}) > 1  # and the conversations over several
    assert router.stats.group_spills == 0 and router.stats.prefix_hits >= 6 * 3


async def test_the_twin_routes_groups_as_redis_does() -> None:
    """The same requests through a router on the in-process store and one on Redis: the same workers."""
    client = aioredis.Redis.from_url(REDIS_URL)
    prefix = "gwtest-grp-" + secrets.token_hex(4)
    try:
        picks: list[list[str]] = []
        for st in (MemoryState(), RedisState(client)):
            pool = await _pool(12)
            router = PrefixRouter(pool, KeySpace(prefix + type(st).__name__), MemoryState(), st,
                                  RouterConfig(groups=3))
            chosen = []
            for i in range(30):
                worker, _ = await route_one(router, st, pool, conversation(i % 5, i // 5), f"r{i}")
                chosen.append(worker.id)
            picks.append(chosen)
        assert picks[0] == picks[1]
    finally:
        found = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if found:
            await client.delete(*found)
        await client.aclose()


async def test_a_retry_outside_the_group_releases_and_records_in_each_slot(
        store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    pool = await _pool(12)
    router = PrefixRouter(pool, ks, MemoryState(), st, RouterConfig(groups=3))
    raw = conversation(1, 1)
    ex = Exchange(request_id="r1", principal=Principal("k", "o", "o", "salt", True),
                  request=ChatCompletions().parse(raw), path="/v1/chat/completions", payload=raw)
    trip = st.round_trip()
    router.plan(ex, trip)
    results = await trip.execute()
    router.observe(ex, results)
    first = router.choose(ex, results, pool.candidates(MODEL), ())
    assert first is not None and ex.notes["route"].reserved == first.id
    group = router.groups.of(first.id)
    tried = {w.id for w in pool.candidates(MODEL) if router.groups.of(w.id) == group}  # the whole group failed
    retry = router.choose(ex, results, pool.candidates(MODEL), tried)
    assert retry is not None and router.groups.of(retry.id) != group
    assert await st.run(_COUNT, [ks.inflight(MODEL, first.id, group)], []) == 1
    ex.worker, ex.status = retry, 200
    ex.usage = {"prompt_tokens": 2000, "completion_tokens": 8, "prompt_tokens_details": {"cached_tokens": 2000}}
    settle = st.round_trip()
    router.finish(ex, settle)
    calls = settle._calls  # type: ignore[attr-defined]
    assert [len({k[k.index("{"):k.index("}") + 1] for k in keys}) for _, keys, _ in calls] == [1, 1]
    router.settled(ex, await settle.execute())
    assert await st.run(_COUNT, [ks.inflight(MODEL, first.id, group)], []) == 0  # released
    again, _ = await route_one(router, st, pool, raw, "r2")
    assert router.groups.of(again.id) == group  # home again; the retry's worker holds the prefix too:
    assert await st.run(_COUNT, [ks.prefix_index(MODEL, retry.id, router.groups.of(retry.id))], []) > 0


def _count_py(store: Any, keys: Any, args: Any, now: int) -> int:
    return len(store.zset(keys[0]))


_COUNT = Script("zcard", "return redis.call('ZCARD', KEYS[1])", _count_py)


async def test_explain_peeks_into_the_group_the_request_would_go_to() -> None:
    st = MemoryState()
    pool = await _pool(12)
    router = PrefixRouter(pool, KeySpace("gwtest-grp-x"), MemoryState(), st, RouterConfig(groups=3))
    raw = conversation(2, 1)
    worker, _ = await route_one(router, st, pool, raw, "r1")
    body = orjson.loads(raw)
    decision = await router.explain(Principal("k", "o", "o", "salt", True), body, {}, True, MODEL)
    group = router.groups.of(worker.id)
    assert decision.reason.startswith(f"worker group {group} of 3")
    members = {w.id for w in pool.candidates(MODEL) if router.groups.of(w.id) == group}
    assert {c.worker for c in decision.candidates} == members
    assert decision.chosen == worker.id  # the prefix it just recorded there
