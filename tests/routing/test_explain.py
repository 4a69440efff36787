"""Explaining a routing decision: admin only, off by default, read-only, and it agrees with the router."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import ADMIN_KEY, MODEL, Backend, ServedGateway, gateway_settings, serve_gateway
from workersim.run import RunningSim

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _conversation(turns: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "you are a coding agent " * 100},
                                      {"role": "user", "content": "fix the bug in parser.py " * 20}]
    for i in range(turns):
        messages.append({"role": "assistant", "content": f"step {i} " * 30})
        messages.append({"role": "user", "content": f"result {i} " * 60})
    return {"model": MODEL, "max_tokens": 2, "messages": messages}


async def _explain(http: aiohttp.ClientSession, url: str, payload: dict[str, Any],
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    sent = ADMIN if headers is None else headers
    async with http.post(url + "/admin/routing/explain", json=payload, headers=sent) as resp:
        return resp.status, await resp.json()


async def test_explain_is_off_by_default(gateway: ServedGateway, api_key: str) -> None:
    org = (await gateway.app.runtime.keys.list_orgs())[0].id
    async with aiohttp.ClientSession() as http:
        status, body = await _explain(http, gateway.url, {"org_id": org, "body": _conversation(0)})
    assert status == 404
    assert "GATEWAY_ROUTING_EXPLAIN" in body["error"]["message"]


async def test_explain_says_where_and_why_for_admins_only(backend: Backend, sims: list[RunningSim]) -> None:
    gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_explain=True,
                                              routing_infer_sessions=False))
    try:
        rt = gw.app.runtime
        org = await rt.keys.get_or_create_org("explain-" + backend.name)
        key = (await rt.keys.create_key(org.id, "k")).key
        hint = {"x-grok-conv-id": "conv-explained"}
        async with aiohttp.ClientSession() as http:
            status, _ = await _explain(http, gw.url, {"org_id": org.id, "body": _conversation(0)},
                                       {"Authorization": f"Bearer {key}"})
            assert status == 401  # an API key is not the admin key
            status, _ = await _explain(http, gw.url, {"org_id": org.id, "body": _conversation(0)}, {})
            assert status == 401
            async with http.post(gw.url + "/v1/chat/completions", json=_conversation(2),
                                 headers={"Authorization": f"Bearer {key}", **hint}) as resp:
                assert resp.status == 200, await resp.text()
                served_by = resp.headers["x-gateway-worker"]
            requests = rt.router.stats.requests
            payload = {"org_id": org.id, "body": _conversation(3), "headers": hint}
            status, first = await _explain(http, gw.url, payload)
            assert status == 200, first
            status, again = await _explain(http, gw.url, payload)
        assert rt.router.stats.requests == requests  # explaining routes nothing
        assert first == again  # ... and changes no routing state
        assert first["chosen"] == served_by and first["bound_worker"] == served_by and first["hint"] is True
        assert "affinity" in first["reason"]
        by_worker = {c["worker"]: c for c in first["candidates"]}
        assert set(by_worker) == {w.id for w in rt.pool.all()} and len(by_worker) == len(sims)
        assert by_worker[served_by]["matched_blocks"] > 0  # the turn before went there
        assert all(c["matched_blocks"] == 0 for w, c in by_worker.items() if w != served_by)
        assert first["bound"] >= 1 and all(c["eligible"] for c in first["candidates"])
        assert first["blocks"] > by_worker[served_by]["matched_blocks"]  # this turn is longer
        # without the hint (and without session inference) the cost decides: the worker holding the prefix
        async with aiohttp.ClientSession() as http:
            status, cost = await _explain(http, gw.url, {"org_id": org.id, "body": _conversation(3)})
        assert status == 200 and cost["chosen"] == served_by and cost["hint"] is False
        assert cost["reason"].startswith("lowest cost") and "runner-up" in cost["reason"]
    finally:
        await gw.stop()


async def test_without_a_hint_a_conversation_is_known_by_its_opening(backend: Backend, sims: list[RunningSim]) -> None:
    """Session inference: turns 2, 3, ... of a conversation open with the same messages (the system one,
    the first user one, the first answer), so the router binds that opening to the worker as it does a
    hint; with GATEWAY_ROUTING_INFER_SESSIONS=false nothing is bound."""
    for infer in (True, False):
        gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], routing_explain=True,
                                                  routing_infer_sessions=infer,
                                                  redis_prefix=f"{backend.redis_prefix}-infer-{infer}"))
        try:
            rt = gw.app.runtime
            org = await rt.keys.get_or_create_org(f"infer-{backend.name}-{infer}")
            key = (await rt.keys.create_key(org.id, "k")).key
            async with aiohttp.ClientSession() as http:
                for turns in (1, 2):
                    async with http.post(gw.url + "/v1/chat/completions", json=_conversation(turns),
                                         headers={"Authorization": f"Bearer {key}"}) as resp:
                        assert resp.status == 200, await resp.text()
                        served_by = resp.headers["x-gateway-worker"]
                status, out = await _explain(http, gw.url, {"org_id": org.id, "body": _conversation(3)})
            assert status == 200
            if infer:
                assert out["hint"] is True and out["bound_worker"] == served_by and "affinity" in out["reason"]
            else:
                assert out["hint"] is False and out["bound_worker"] is None
        finally:
            await gw.stop()
