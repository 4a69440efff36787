"""First placement (GATEWAY_ROUTING_LIVE_WINDOW_S): a request opening a conversation no binding knows
goes only to the eligible workers with the fewest live conversations (bound there, active within the
window); bound conversations never see the count. The rule, its explanation, both stores' scripts and the
router's flag for an inferred session's first turn."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from gateway.config import Settings
from gateway.pipeline.principal import Principal
from gateway.routing.choose import RuleParams, pick
from gateway.routing.explain import PEEK, decide
from gateway.routing.pool import WorkerPool
from gateway.routing.router import PrefixRouter, RouterConfig
from gateway.runtime import router_config
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from tests.routing.test_index_scripts import MODEL, WORKERS, chain, record, route

P = RuleParams(load_factor=1.25, load_slack=2.0, kv_limit=0.95, load_cost=8.0, live_slack=1.0, live_weight=0.0)
WEIGHED = RuleParams(load_factor=1.25, load_slack=2.0, kv_limit=0.95, load_cost=8.0)  # weight 1, no bound
ALL4 = [True] * 4
W = 60_000  # live window, ms


def test_a_new_conversation_goes_to_the_fewest_live_conversations() -> None:
    # worker 0 holds the partner's system prompt, worker 1 a little less; live 3 / 1 / 1 / 2
    matches, loads, kv = [20, 19, 0, 0], [0.0] * 4, [0.1] * 4
    assert pick(matches, loads, kv, ALL4, P, start=0) == (0, False)  # without the count: the prefix
    assert pick(matches, loads, kv, ALL4, P, start=0, live=[3, 1, 1, 2]) == (1, False)
    # live slack 2: within one of the fewest are eligible too, and then the cost decides
    wide = RuleParams(load_factor=1.25, load_slack=2.0, kv_limit=0.95, live_slack=2.0, live_weight=0.0)
    assert pick(matches, loads, kv, ALL4, wide, start=0, live=[2, 1, 1, 3]) == (0, False)
    # only among the load-eligible: worker 2 (no live conversation) is over the load bound
    assert pick(matches, [0, 0, 4, 0], kv, ALL4, P, start=0, live=[3, 1, 0, 2]) == (1, False)


def test_live_conversations_weigh_in_a_new_conversations_cost() -> None:
    # weight 1 x load cost 8 per live conversation: 20 matched blocks outweigh two live ones, not three
    matches, loads, kv = [20, 0, 0, 0], [0.0] * 4, [0.1] * 4
    assert pick(matches, loads, kv, ALL4, WEIGHED, start=1, live=[2, 0, 0, 0]) == (0, False)  # -20 + 16 < 0
    assert pick(matches, loads, kv, ALL4, WEIGHED, start=1, live=[3, 0, 0, 0]) == (1, False)  # -20 + 24 > 0


def test_a_bound_conversation_ignores_the_count() -> None:
    assert pick([20, 0, 0, 0], [0.0] * 4, [0.1] * 4, ALL4, P, start=0, affinity=0, live=[5, 0, 0, 0]) == (0, True)
    assert pick([20, 0, 0, 0], [0.0] * 4, [0.1] * 4, ALL4, WEIGHED, 0, affinity=0, live=[5, 0, 0, 0]) == (0, True)


def test_explain_applies_the_first_placement_like_the_rule() -> None:
    ids = ["w0", "w1", "w2", "w3"]
    _, rows, chosen, reason = decide(ids, [20, 19, 0, 0], [0] * 4, [0.0] * 4, [0.1] * 4, [0] * 4, P, None,
                                     True, [3, 1, 1, 2])
    assert chosen == "w1" == ids[pick([20, 19, 0, 0], [0.0] * 4, [0.1] * 4, ALL4, P, 0, live=[3, 1, 1, 2])[0]]
    assert "fewest live conversations (1 + live slack 1)" in reason
    assert not rows[0].eligible and "3 live conversations + 1 > the fewest 1" in rows[0].note
    assert [r.live for r in rows] == [3, 1, 1, 2]
    assert decide(ids, [20, 19, 0, 0], [0] * 4, [0.0] * 4, [0.1] * 4, [0] * 4, P, None, True)[2] == "w0"
    _, rows, chosen, reason = decide(ids, [20, 0, 0, 0], [0] * 4, [0.0] * 4, [0.1] * 4, [0] * 4, WEIGHED, None,
                                     True, [3, 0, 0, 0])
    assert chosen != "w0" and rows[0].cost == -20 + 24 and "8.00 x 0 live conversations" in reason


def test_the_live_settings_reach_the_router() -> None:
    assert router_config(Settings()).live_window_ms == 0  # off by default
    config = router_config(Settings(routing_live_window_s=3, routing_live_slack=2, routing_live_weight=0.5))
    assert config.live_window_ms == 3000 and config.rule.live_slack == 2.0 and config.rule.live_weight == 0.5
    for bad in ({"routing_live_window_s": 1e300}, {"routing_live_window_s": float("nan")},
                {"routing_live_window_s": -1}, {"routing_live_weight": float("inf")},
                {"routing_live_weight": float("nan")}, {"routing_live_slack": -1}):
        with pytest.raises(ValidationError):  # refused at start-up, not failing every route script
            Settings(**bad)


async def live(st: StateStore, ks: KeySpace, window: int = W) -> list[int]:
    keys = [ks.affinity(MODEL, "-")]
    for w in WORKERS:
        keys += [ks.prefix_index(MODEL, w), ks.inflight(MODEL, w)]
    keys += [ks.live(MODEL, w) for w in WORKERS]
    out = await st.run(PEEK, keys, [b"", "0", "0", len(WORKERS), window])
    return [int(x) for x in out[1 + 2 * len(WORKERS):1 + 3 * len(WORKERS)]]


async def test_the_route_script_places_new_conversations_by_live_count(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    hot = chain("system", 8)
    await record(st, ks, "w-a", hot, "warm")
    turn = hot + chain("u", 1, after=hot)[64:]

    async def go(rid: str, hint: str, window: int = W, opens: bool = True, **kw: Any) -> dict[str, Any]:
        r = await route(st, ks, turn, rid, hint=hint, live_window=window, opens=opens, **kw)
        await record(st, ks, r["chosen"], b"", rid)  # answered: nothing in flight between turns
        return r

    # two conversations on w-a (by their prefix: not opening ones), live there
    assert (await go("r1", "conv-1", opens=False))["chosen"] == "w-a"
    assert (await go("r2", "conv-2", opens=False))["chosen"] == "w-a"
    assert await live(st, ks) == [2, 0, 0]
    # a new one of the same partner: without the window the prefix takes it to w-a; with it, not
    assert (await go("r3", "conv-3", window=0))["chosen"] == "w-a"
    placed = await go("r4", "conv-4")
    assert placed["chosen"] != "w-a" and not placed["affinity"]
    assert sum(await live(st, ks)) == 3  # conv-3 was routed without the window: not counted
    # a bound conversation stays where it is bound, whatever the count
    kept = await go("r5", "conv-1")
    assert kept["chosen"] == "w-a" and kept["affinity"]
    # an inferred session's later turn (opens=0) with a new key: the cost rule, not the count
    assert (await go("r6", "conv-5", opens=False))["chosen"] == "w-a"
    # a move takes the conversation's live mark with it
    before = await live(st, ks)
    moved = await go("r7", "conv-1", waiting=(50, 0, 0))
    assert moved["chosen"] != "w-a"
    after = await live(st, ks)
    assert after[0] == before[0] - 1 and sum(after) == sum(before)


async def test_the_route_script_weighs_live_conversations(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    hot = chain("system", 8)
    await record(st, ks, "w-a", hot, "warm")
    for i in range(3):  # three conversations live on w-a (placed by their prefix)
        r = await route(st, ks, hot, f"r{i}", hint=f"conv-{i}", live_window=W, opens=False)
        await record(st, ks, r["chosen"], b"", f"r{i}")
        assert r["chosen"] == "w-a"
    # 8 matched blocks against 3 live conversations x weight x load cost 4: 6 < 8 stays, 12 > 8 spreads
    r = await route(st, ks, hot, "n1", hint="new-1", live_window=W, live_slack=0, live_weight=0.5)
    await record(st, ks, r["chosen"], b"", "n1")
    assert r["chosen"] == "w-a"
    r = await route(st, ks, hot, "n2", hint="new-2", live_window=W, live_slack=0, live_weight=0.75, start=1)
    assert r["chosen"] == "w-b"  # 4 live x 3 = 12 > 8: the least cost is an empty worker (the rotation's first)


async def test_live_marks_pass_with_the_window(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    hot = chain("system", 8)
    await record(st, ks, "w-a", hot, "warm")
    r = await route(st, ks, hot, "r1", hint="conv-1", live_window=80, opens=False)
    await record(st, ks, r["chosen"], b"", "r1")
    assert r["chosen"] == "w-a" and await live(st, ks, 80) == [1, 0, 0]
    await asyncio.sleep(0.15)
    assert await live(st, ks, 80) == [0, 0, 0]
    fresh = await route(st, ks, hot, "r2", hint="conv-2", live_window=80)
    assert fresh["chosen"] == "w-a"  # nobody is live any more: the prefix decides again


async def test_only_a_first_turn_or_an_explicit_hint_may_open_a_conversation() -> None:
    principal = Principal("k", "o", "o", "salt", True)
    first = {"model": MODEL, "messages": [{"role": "system", "content": "agent " * 50},
                                          {"role": "user", "content": "fix it " * 20}]}
    second = {**first, "messages": [*first["messages"], {"role": "assistant", "content": "done"},
                                    {"role": "tool", "tool_call_id": "c0", "content": "ok " * 30}]}
    async with aiohttp.ClientSession() as http:
        for policy in ("prefix_aware", "least_loaded"):
            router = PrefixRouter(WorkerPool(http), KeySpace("gwtest-opens"), MemoryState(), MemoryState(),
                                  RouterConfig(policy=policy))
            opening = router.note_for(principal, first, {}, True, MODEL)
            later = router.note_for(principal, second, {}, True, MODEL)
            hinted = router.note_for(principal, second, {"x-grok-conv-id": "c"}, True, MODEL)
            assert opening.hint and opening.opens  # an inferred session's first turn: no answer yet
            assert later.hint and not later.opens  # its second turn: a new key, but not a new conversation
            assert hinted.opens  # an explicit hint: the script knows whether it is bound
