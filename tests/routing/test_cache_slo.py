"""The per-partner cache SLO: each organisation's cached share of prompt tokens over a sliding window,
as gauges at /metrics (no org labels by default), in the usage API next to its plan's SLO, and the
alert's input (organisations below their SLO)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from gateway.observability.cache_share import CacheShareCollector, CacheShareWindow
from tests.conftest import ADMIN_KEY, MODEL, Backend, gateway_settings, serve_gateway
from workersim.run import RunningSim


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_slides_and_forgets_organisations_without_traffic() -> None:
    clock = Clock()
    w = CacheShareWindow(window_s=60, buckets=6, clock=clock)
    w.record("org-a", 1000, 900)
    w.record("org-b", 100, 10)
    clock.now += 30
    w.record("org-a", 1000, 100)
    snap = w.snapshot()
    assert [o.org_id for o in snap] == ["org-a", "org-b"]  # most prompt tokens first
    assert snap[0].prompt_tokens == 2000 and snap[0].share == pytest.approx(0.5)
    clock.now += 35  # the first slice (and org-b) left the window
    snap = w.snapshot()
    assert [(o.org_id, o.prompt_tokens, o.cached_tokens) for o in snap] == [("org-a", 1000, 100)]
    clock.now += 120
    assert w.snapshot() == []


def test_gauges_without_org_labels_give_ranks_a_distribution_and_the_count_below_slo() -> None:
    w = CacheShareWindow(window_s=60, buckets=6, clock=Clock())
    w.slos = {"big": 0.85, "small": 0.85}
    w.record("big", 10_000, 9_000)  # 0.90: meets it
    w.record("mid", 5_000, 1_000)  # 0.20: no SLO
    w.record("small", 1_000, 500)  # 0.50: misses it
    samples = {(m.name, tuple(sorted(s.labels.items()))): s.value
               for m in CacheShareCollector(w, org_labels=False, top_n=2).collect() for s in m.samples}
    assert samples[("gateway_orgs_below_cache_slo", ())] == 1
    assert samples[("gateway_org_cached_share", (("rank", "1"),))] == pytest.approx(0.9)
    assert samples[("gateway_org_cached_share", (("rank", "2"),))] == pytest.approx(0.2)
    assert ("gateway_org_cached_share", (("rank", "3"),)) not in samples  # top 2 only
    assert samples[("gateway_org_cached_share_orgs", (("le", "0.5"),))] == 2
    assert samples[("gateway_org_cached_share_orgs", (("le", "0.9"),))] == 3
    assert not any("org" in dict(labels) for _, labels in samples)
    # a partner with too little traffic in the window is not judged
    few = {m.name: m.samples[0].value for m in CacheShareCollector(w, False, 2, min_prompt_tokens=2_000).collect()}
    assert few["gateway_orgs_below_cache_slo"] == 0


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _chat(http: aiohttp.ClientSession, url: str, key: str, text: str) -> None:
    body = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "system", "content": text},
                                                          {"role": "user", "content": "go"}]}
    async with http.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()


async def _partner(http: aiohttp.ClientSession, url: str, name: str, slo: float | None) -> tuple[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with http.post(url + "/admin/orgs", json={"name": name}, headers=admin) as resp:
        assert resp.status in (200, 201), await resp.text()
        org = (await resp.json())["id"]
    async with http.post(url + "/admin/plans", json={"name": name + "-plan", "cache_slo": slo}, headers=admin) as resp:
        assert resp.status == 201, await resp.text()
        plan = await resp.json()
        assert plan["cache_slo"] == slo
    async with http.put(url + f"/admin/orgs/{org}/plan", json={"plan_id": plan["id"]}, headers=admin) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(url + "/admin/keys", json={"org_id": org, "name": "k"}, headers=admin) as resp:
        assert resp.status in (200, 201), await resp.text()
        return org, (await resp.json())["key"]


@pytest.mark.parametrize("org_labels", [False, True])
async def test_a_partner_whose_client_rewrites_history_falls_below_its_slo(
        backend: Backend, sims: list[RunningSim], org_labels: bool) -> None:
    gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], metrics_org_labels=org_labels,
                                              cache_slo_min_prompt_tokens=0, cache_slo_refresh_s=0.1))
    try:
        async with aiohttp.ClientSession() as http:
            tag = f"{backend.name}-{org_labels}-{id(gw) % 100_000}"
            good, good_key = await _partner(http, gw.url, f"slo-good-{tag}", 0.5)
            bad, bad_key = await _partner(http, gw.url, f"slo-bad-{tag}", 0.5)
            stable = "the same long system prompt " * 80
            for _ in range(4):  # the same prefix every time: cached from the second request on
                await _chat(http, gw.url, good_key, stable)
            for i in range(4):  # the history rewritten every time: nothing to reuse
                await _chat(http, gw.url, bad_key, f"rewritten {i} " + "history " * 300)
            for _ in range(50):  # the SLO refresh runs in the background
                async with http.get(gw.url + "/metrics") as resp:
                    text = await resp.text()
                if _sample(text, "gateway_orgs_below_cache_slo") == 1:
                    break
                await asyncio.sleep(0.1)
            assert _sample(text, "gateway_orgs_below_cache_slo") == 1
            if org_labels:
                good_share = _sample(text, "gateway_org_cached_share", org=good)
                bad_share = _sample(text, "gateway_org_cached_share", org=bad)
                assert good_share is not None and good_share > 0.5
                assert bad_share is not None and bad_share < 0.5
                assert _sample(text, "gateway_org_cache_slo", org=bad) == 0.5
            else:
                assert good not in text and bad not in text  # no organisation ids without org labels
                assert _sample(text, "gateway_org_cached_share", rank="1") is not None
                assert _sample(text, "gateway_org_cached_share_orgs", le="+Inf") == 2
            rt = gw.app.runtime
            await rt.billing.flush()
            for _ in range(100):  # the shared backend's stream writers run in the background
                if rt.billing.ledger.records >= 8:
                    break
                await asyncio.sleep(0.05)
            bad_usage = await _usage(http, gw.url, bad_key)
            good_usage = await _usage(http, gw.url, good_key)
            assert bad_usage["cache_slo"] == good_usage["cache_slo"] == 0.5
            assert bad_usage["cache_slo_met"] is False and good_usage["cache_slo_met"] is True
    finally:
        await gw.stop()


async def _usage(http: aiohttp.ClientSession, url: str, key: str) -> dict[str, Any]:
    async with http.get(url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())
