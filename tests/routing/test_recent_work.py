"""First placement by recent work (GATEWAY_ROUTING_WORK_HALFLIFE_S): every routed request adds the
blocks it is predicted to prefill to its worker's recent work, which halves every half-life; a request
opening a conversation no binding knows counts that work in its cost, so new conversations go where the
recent prefill was least. Bound conversations never see it. The rule, its explanation, both stores'
scripts and the router's flag for an inferred session's first turn."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from gateway.config import Settings
from gateway.pipeline.principal import Principal
from gateway.routing.choose import RuleParams, pick
from gateway.routing.explain import PEEK, decide
from gateway.routing.index import PURGE
from gateway.routing.policies import Choice, RouteNote, by_rule
from gateway.routing.pool import WorkerPool
from gateway.routing.prefix import PrefixKey
from gateway.routing.router import PrefixRouter, RouterConfig
from gateway.routing.stats import RoutingStats
from gateway.routing.worker import Worker
from gateway.runtime import router_config
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.upstream.worker_probe import WorkerProbe
from tests.conftest import ADMIN_KEY, Backend, gateway_settings, serve_gateway
from tests.conftest import MODEL as GW_MODEL
from tests.routing.test_index_scripts import MODEL, WORKERS, chain, record, route
from workersim.run import RunningSim

QUARTER = RuleParams(load_factor=1.25, load_slack=2.0, kv_limit=0.95, load_cost=8.0, work_weight=0.25)
ALL4 = [True] * 4
H = 60_000  # half-life, ms


def test_recent_work_weighs_in_a_new_conversations_cost() -> None:
    # 20 matched blocks on worker 0 against a quarter of its recent work above the others'
    matches, loads, kv = [20, 0, 0, 0], [0.0] * 4, [0.1] * 4
    assert pick(matches, loads, kv, ALL4, QUARTER, start=1, work=[160, 100, 100, 100]) == (0, False)  # 40 - 20 < 25
    assert pick(matches, loads, kv, ALL4, QUARTER, start=1, work=[200, 100, 100, 100]) == (1, False)  # 50 - 20 > 25
    assert pick(matches, loads, kv, ALL4, QUARTER, start=1, work=[200, 100, 90, 100]) == (2, False)  # the least
    assert pick(matches, loads, kv, ALL4, QUARTER, start=1) == (0, False)  # without it: the prefix


def test_a_bound_conversation_ignores_recent_work() -> None:
    assert pick([20, 0, 0, 0], [0.0] * 4, [0.1] * 4, ALL4, QUARTER, 0, affinity=0, work=[1e6, 0, 0, 0]) == (0, True)


def test_explain_counts_recent_work_like_the_rule() -> None:
    ids = ["w0", "w1", "w2", "w3"]
    work = [200.0, 100.0, 90.0, 100.0]
    _, rows, chosen, reason = decide(ids, [20, 0, 0, 0], [0] * 4, [0.0] * 4, [0.1] * 4, [0] * 4, QUARTER, None,
                                     True, work)
    assert chosen == "w2" == ids[pick([20, 0, 0, 0], [0.0] * 4, [0.1] * 4, ALL4, QUARTER, 0, work=work)[0]]
    assert rows[0].cost == -20 + 50 and rows[2].cost == 22.5 and [r.recent_work for r in rows] == work
    assert "0.25 x 90.0 blocks of recent prefill" in reason
    # a conversation bound to w0 stays there: the first placement does not apply
    assert decide(ids, [20, 0, 0, 0], [0] * 4, [0.0] * 4, [0.1] * 4, [0] * 4, QUARTER, "w0", True, work)[2] == "w0"


def test_the_work_settings_reach_the_router() -> None:
    default = router_config(Settings())
    assert default.work_halflife_ms == 60_000 and default.rule.work_weight == 0.25  # on by default
    assert router_config(Settings(routing_work_halflife_s=0)).work_halflife_ms == 0  # off
    config = router_config(Settings(routing_work_halflife_s=20, routing_work_weight=0.5))
    assert config.work_halflife_ms == 20_000 and config.rule.work_weight == 0.5
    for bad in ({"routing_work_halflife_s": 1e300}, {"routing_work_halflife_s": float("nan")},
                {"routing_work_halflife_s": -1}, {"routing_work_weight": float("inf")},
                {"routing_work_weight": -1}):
        with pytest.raises(ValidationError):  # refused at start-up, not failing every route script
            Settings(**bad)


async def work(st: StateStore, ks: KeySpace, halflife: int = H) -> list[float]:
    keys = [ks.affinity(MODEL, "-")]
    for w in WORKERS:
        keys += [ks.prefix_index(MODEL, w), ks.inflight(MODEL, w)]
    keys += [ks.work(MODEL, w) for w in WORKERS]
    out = await st.run(PEEK, keys, [b"", "0", "0", len(WORKERS), halflife])
    return [float(x.decode() if isinstance(x, bytes) else x) for x in out[1 + 2 * len(WORKERS):]]


def read_work(routed: dict[str, Any]) -> list[int | None]:
    """The route script's work cells, rounded (None: not read)."""
    return [round(float(cell)) if cell else None for cell in routed["work"]]


async def test_the_route_script_adds_predicted_prefill_and_places_by_it(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    hot = chain("system", 8)
    await record(st, ks, "w-a", hot, "warm")

    async def go(rid: str, hashes: bytes, hint: str, opens: bool = True, **kw: Any) -> dict[str, Any]:
        r = await route(st, ks, hashes, rid, hint=hint, opens=opens, halflife=H, work_weight=0.25, **kw)
        await record(st, ks, r["chosen"], b"", rid)  # answered: nothing in flight between turns
        return r

    # three conversations of the partner on w-a (their later turns: placed by the prefix), each 40 new blocks
    for i in range(3):
        r = await go(f"r{i}", hot + chain(f"c{i}", 40, after=hot)[64:], f"conv-{i}", opens=False)
        assert r["chosen"] == "w-a"
    done_turn = r
    done = await work(st, ks)
    assert [round(x) for x in done] == [120, 0, 0]  # the blocks w-a did not hold, nothing for the others
    # a request whose blocks the worker holds adds nothing
    await go("again", hot, "conv-0", opens=False)
    assert [round(x) for x in await work(st, ks)] == [120, 0, 0]
    # a new conversation of the partner: 8 matched blocks against a quarter of 120: it goes elsewhere,
    # and the blocks it will prefill there count at once (for the next request of a burst)
    new = await go("n1", hot + chain("n1", 1, after=hot)[64:], "new-1")
    assert new["chosen"] != "w-a" and not new["affinity"]
    assert read_work(new) == [120, 0, 0]  # what it weighed, returned for a retry's choice
    assert read_work(done_turn) == [None, None, None]  # a later turn's placement reads no work
    assert round(sum(await work(st, ks))) == 120 + 9
    # the same without the lever: the prefix keeps it on w-a
    plain = await route(st, ks, hot + chain("n2", 1, after=hot)[64:], "n2", hint="new-2")
    assert plain["chosen"] == "w-a"
    # a bound conversation stays where it is bound, whatever the work
    kept = await go("k0", hot + chain("c0", 41, after=hot)[64:], "conv-0")
    assert kept["chosen"] == "w-a" and kept["affinity"]


async def test_a_first_placement_adds_to_the_full_work_and_a_purge_forgets_it(
        store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    r = await route(st, ks, chain("c", 40), "r1", hint="conv-1", opens=False, halflife=H)
    await record(st, ks, r["chosen"], b"", "r1")
    assert r["chosen"] == "w-a" and [round(x) for x in await work(st, ks)] == [40, 0, 0]
    # a new conversation that only w-a may take (the others' KV is full): its 10 blocks add to all 40 of
    # w-a's work, not to the quarter of it the choice weighed
    r = await route(st, ks, chain("n", 10), "r2", hint="new-1", kv=(0, 0.99, 0.99), halflife=H, work_weight=0.25)
    await record(st, ks, r["chosen"], b"", "r2")
    assert r["chosen"] == "w-a" and [round(x) for x in await work(st, ks)] == [50, 0, 0]
    assert read_work(r) == [40, None, None]  # read for the eligible candidates only
    # the worker restarted or left: its cache, and with it what its work stood for, is gone
    await st.run(PURGE, [ks.prefix_index(MODEL, "w-a"), ks.inflight(MODEL, "w-a"), ks.work(MODEL, "w-a")], [])
    assert await work(st, ks) == [0.0, 0.0, 0.0]


async def test_a_retry_of_a_first_placement_weighs_recent_work_too(store: tuple[StateStore, KeySpace]) -> None:
    """The script's pick failed (its worker could not be reached): the forwarder's retry applies the same
    rule locally to what the script returned, the work term included, so a new conversation still goes to
    the worker that did the least recent prefill, not to the rotation's next."""
    st, ks = store
    busy = await route(st, ks, chain("b", 60), "r0", hint="conv-b", opens=False, halflife=H, start=1)
    await record(st, ks, busy["chosen"], b"", "r0")
    assert busy["chosen"] == "w-b"
    new = await route(st, ks, chain("n", 4), "r1", hint="new-1", halflife=H, work_weight=0.25)
    assert new["chosen"] == "w-a" and read_work(new) == [0, 60, 0]
    candidates = [Worker(id=w, url=f"http://{w}", source="config", healthy=True) for w in WORKERS]

    def retry(result: list[Any]) -> str | None:
        note = RouteNote(key=PrefixKey(chain("n", 4), 4 * 64, 64), salt="", hint="new-1", opens=True,
                         ids=list(WORKERS), result=0)
        choice = Choice(note, [result], candidates, {"w-a"}, lambda: 1, lambda: QUARTER, RoutingStats(),
                        random.Random(0))
        chosen = by_rule(choice, prefix=True)
        return chosen.id if chosen is not None else None

    assert retry(new["raw"]) == "w-c"  # w-b, the rotation's next, did 60 blocks of recent prefill
    n = len(WORKERS)
    assert retry([*new["raw"][:4 + 2 * n], "", "", ""]) == "w-b"  # without the work read: the rotation


async def test_recent_work_halves_every_half_life(store: tuple[StateStore, KeySpace]) -> None:
    st, ks = store
    hot = chain("system", 8)
    await record(st, ks, "w-a", hot, "warm")
    r = await route(st, ks, hot + chain("c", 56, after=hot)[64:], "r1", hint="conv-1", opens=False, halflife=100)
    await record(st, ks, r["chosen"], b"", "r1")
    assert r["chosen"] == "w-a"
    first = await work(st, ks, 100)
    assert 40 < first[0] <= 56 and first[1:] == [0.0, 0.0]
    await asyncio.sleep(0.3)  # three half-lives: an eighth is left
    later = await work(st, ks, 100)
    assert 0 < later[0] <= first[0] / 6
    # so the partner's prefix decides again for a new conversation (8 matched > a quarter of ~6)
    fresh = await route(st, ks, hot + chain("n", 1, after=hot)[64:], "n1", hint="new-1", halflife=100,
                        work_weight=0.25)
    assert fresh["chosen"] == "w-a"


async def test_explain_shows_each_workers_recent_work(backend: Backend, sims: list[RunningSim]) -> None:
    """Through the gateway: a served request's prefill counts on its worker at once, and the explain
    endpoint shows it for a new conversation, with the term in the reason."""
    gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_explain=True,
                                              routing_work_halflife_s=60, routing_work_weight=0.25,
                                              redis_prefix=f"{backend.redis_prefix}-work"))
    try:
        rt = gw.app.runtime
        org = await rt.keys.get_or_create_org("work-" + backend.name)
        key = (await rt.keys.create_key(org.id, "k")).key
        body = {"model": GW_MODEL, "max_tokens": 2,
                "messages": [{"role": "system", "content": "you are a coding agent " * 100},
                             {"role": "user", "content": "fix the bug in parser.py " * 20}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.url + "/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {key}", "x-grok-conv-id": "first"}) as resp:
                assert resp.status == 200, await resp.text()
                served_by = resp.headers["x-gateway-worker"]
            async with http.post(gw.url + "/admin/routing/explain", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                 json={"org_id": org.id, "body": body, "headers": {"x-grok-conv-id": "new"}}) as resp:
                assert resp.status == 200
                out = await resp.json()
        assert out["work_halflife_s"] == 60 and out["work_weight"] == 0.25 and out["bound_worker"] is None
        work = {c["worker"]: c["recent_work"] for c in out["candidates"]}
        assert work[served_by] > 0 and all(v == 0 for w, v in work.items() if w != served_by)
        assert "blocks of recent prefill" in out["reason"]
    finally:
        await gw.stop()


async def test_only_a_first_turn_or_an_explicit_hint_may_open_a_conversation() -> None:
    principal = Principal("k", "o", "o", "salt", True)
    first = {"model": MODEL, "messages": [{"role": "system", "content": "agent " * 50},
                                          {"role": "user", "content": "fix it " * 20}]}
    second = {**first, "messages": [*first["messages"], {"role": "assistant", "content": "done"},
                                    {"role": "tool", "tool_call_id": "c0", "content": "ok " * 30}]}
    async with WorkerProbe.build(Settings()) as http:
        for policy in ("prefix_aware", "least_loaded"):
            router = PrefixRouter(WorkerPool(http), KeySpace("gwtest-opens"), MemoryState(), MemoryState(),
                                  RouterConfig(policy=policy))
            opening = router.note_for(principal, first, {}, True, MODEL)
            later = router.note_for(principal, second, {}, True, MODEL)
            hinted = router.note_for(principal, second, {"x-grok-conv-id": "c"}, True, MODEL)
            assert opening.hint and opening.opens  # an inferred session's first turn: no answer yet
            assert later.hint and not later.opens  # its second turn: a new key, but not a new conversation
            assert hinted.opens  # an explicit hint: the script knows whether it is bound
