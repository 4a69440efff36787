"""Workers behind a key (vLLM's ``--api-key``): health checks, /metrics scrapes and requests carry
``Authorization: Bearer <key>`` and the extra headers, to that worker only. A worker answering 401/403 is
*misconfigured*: out of rotation, logged at error level once, shown in the admin listing and a gauge. Workers
added through the admin API take the same fields; their key is only ever an env reference and is never shown
by the API, the logs or the metrics."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from gateway.upstream.fleet_config import WorkerSpec
from tests.conftest import ADMIN_KEY, MODEL, Backend, ServedGateway, gateway_settings, serve_gateway
from workersim.run import RunningSim, start_sim_server
from workersim.sim_settings import SimConfig

SECRET = "vk-" + secrets.token_hex(8)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def locked_sim() -> AsyncIterator[RunningSim]:
    sim = await start_sim_server(SimConfig(worker_id="locked", time_scale=0.0, api_key=SECRET))
    yield sim
    await sim.stop()


@pytest.fixture
async def open_sim() -> AsyncIterator[RunningSim]:
    sim = await start_sim_server(SimConfig(worker_id="open", time_scale=0.0, seed=1))
    yield sim
    await sim.stop()


async def _key(gw: ServedGateway) -> str:
    rt = gw.app.runtime
    org = await rt.keys.get_or_create_org("auth-" + secrets.token_hex(3))
    return (await rt.keys.create_key(org.id, "k")).key


async def test_sim_refuses_v1_without_its_key(locked_sim: RunningSim) -> None:
    async with httpx.AsyncClient() as c:
        assert (await c.get(locked_sim.url + "/v1/models")).status_code == 401
        assert (await c.get(locked_sim.url + "/health")).status_code == 200  # as vLLM: /health needs no key
        ok = await c.get(locked_sim.url + "/v1/models", headers={"Authorization": f"Bearer {SECRET}"})
        assert ok.status_code == 200


async def test_key_and_headers_go_to_their_worker_only(backend: Backend, locked_sim: RunningSim,
                                                       open_sim: RunningSim) -> None:
    spec = WorkerSpec(url=locked_sim.url, api_key=SECRET, headers={"X-Pool": "a"}, api_key_ref="os.environ/K")
    gw = await serve_gateway(gateway_settings(backend, [spec, open_sim.url]))
    try:
        rt = gw.app.runtime
        assert {w.url: w.healthy for w in rt.pool.all()} == {locked_sim.url: True, open_sim.url: True}
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await _key(gw), max_retries=0) as client:
            for _ in range(6):
                reply = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": secrets.token_hex(8)}], max_tokens=4)
                assert reply.choices[0].message.content
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True)
            assert [c async for c in stream]
        locked = {path for path, h in locked_sim.app.recent_headers
                  if h.get("authorization") == f"Bearer {SECRET}" and h.get("x-pool") == "a"}
        assert {"/health", "/v1/models", "/metrics", "/v1/chat/completions"} <= locked
        assert all("authorization" not in h and "x-pool" not in h for _, h in open_sim.app.recent_headers)
        assert locked_sim.app.stats.as_dict()  # the locked worker served requests (no 401 reached a client)
    finally:
        await gw.stop()


async def test_a_refused_key_marks_the_worker_misconfigured(backend: Backend, locked_sim: RunningSim,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    wrong = WorkerSpec(url=locked_sim.url, api_key="wrong-" + SECRET, models=(MODEL,))
    gw = await serve_gateway(gateway_settings(backend, [wrong], health_interval_s=0.05))
    try:
        await asyncio.sleep(0.3)  # several health checks: still one error line
        async with httpx.AsyncClient() as c:
            listed = (await c.get(gw.url + "/admin/workers", headers=ADMIN)).json()["data"]
            assert [(w["state"], w["healthy"]) for w in listed] == [("misconfigured", False)]
            assert "401" in listed[0]["last_error"]
            metrics = (await c.get(gw.url + "/metrics")).text
            gauge = [line for line in metrics.splitlines() if line.startswith("gateway_worker_misconfigured{")]
            assert gauge == [f'gateway_worker_misconfigured{{url="{locked_sim.url}",worker="{listed[0]["id"]}"}} 1.0']
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and "MISCONFIGURED" in r.getMessage()]
        assert len(errors) == 1
        assert not any(r.levelno == logging.WARNING and "unhealthy" in r.getMessage() and locked_sim.url in
                       r.getMessage() for r in caplog.records)  # not treated as down
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await _key(gw), max_retries=0) as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
            assert caught.value.status_code == 503  # no worker in rotation: never the worker's 401
        assert "wrong-" + SECRET not in caplog.text
    finally:
        await gw.stop()


async def test_a_request_refused_by_the_worker_goes_elsewhere(backend: Backend, locked_sim: RunningSim,
                                                              open_sim: RunningSim) -> None:
    """The key is wrong only on the request path (health passed before the worker changed its key)."""
    gw = await serve_gateway(gateway_settings(backend, [locked_sim.url, open_sim.url], health_interval_s=60,
                                              routing_policy="round_robin"))
    try:
        rt = gw.app.runtime
        locked = next(w for w in rt.pool.all() if w.url == locked_sim.url)
        assert locked.misconfigured  # its /v1/models answered 401 at start
        locked.healthy, locked.misconfigured, locked.models = True, False, frozenset({MODEL})  # as if it passed
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await _key(gw), max_retries=0) as client:
            for _ in range(4):
                reply = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": secrets.token_hex(6)}], max_tokens=2)
                assert reply.choices[0].message.content
        assert locked.misconfigured and not locked.healthy and locked.state == "misconfigured"
    finally:
        await gw.stop()


async def test_admin_workers_take_a_key_reference_and_never_show_it(
        backend: Backend, locked_sim: RunningSim, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    var = "ADMIN_WORKER_KEY_" + secrets.token_hex(3).upper()
    monkeypatch.setenv(var, SECRET)
    gw = await serve_gateway(gateway_settings(backend, []))
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            literal = await c.post(gw.url + "/admin/workers", headers=ADMIN,
                                   json={"url": locked_sim.url, "api_key": SECRET})
            assert literal.status_code == 400 and literal.json()["error"]["param"] == "api_key"
            assert SECRET not in literal.text
            unset = await c.post(gw.url + "/admin/workers", headers=ADMIN,
                                 json={"url": locked_sim.url, "api_key": "os.environ/NOT_SET_" + var})
            assert unset.status_code == 400 and "is not set" in unset.json()["error"]["message"]
            added = await c.post(gw.url + "/admin/workers", headers=ADMIN,
                                 json={"url": locked_sim.url, "api_key": f"os.environ/{var}",
                                       "headers": {"X-Pool": "b"}})
            assert added.status_code == 201, added.text
            body = added.json()
            assert body["healthy"] is True and body["state"] == "healthy"
            assert body["api_key"] == f"os.environ/{var}" and body["headers"] == ["X-Pool"]
            listed = await c.get(gw.url + "/admin/workers", headers=ADMIN)
            metrics = await c.get(gw.url + "/metrics")
        for text in (added.text, listed.text, metrics.text, caplog.text):
            assert SECRET not in text
        key = await _key(gw)
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2)
        # the chat request; the health loop (every 0.2 s here) may have checked the worker since
        headers = next(h for p, h in reversed(locked_sim.app.recent_headers) if p == "/v1/chat/completions")
        assert headers["authorization"] == f"Bearer {SECRET}"
        assert headers["x-pool"] == "b"
        async with gw.app.runtime.sessions() as s:  # the database holds the reference only
            from sqlalchemy import text
            rows = (await s.execute(text("SELECT api_key_ref, headers FROM workers"))).all()
        assert all(SECRET not in str(row) for row in rows)
        assert any(row[0] == f"os.environ/{var}" for row in rows)
        async with httpx.AsyncClient(timeout=10) as c:
            gone = await c.delete(f"{gw.url}/admin/workers/{body['id']}", headers=ADMIN)
            assert gone.status_code == 200
    finally:
        await gw.stop()
