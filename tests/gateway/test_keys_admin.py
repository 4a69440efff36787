"""API keys and organisations through the admin API and the CLI; workers added at runtime."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
from typer.testing import CliRunner

from gateway.cli import app as cli_app
from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig


async def _admin(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                 **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, headers=headers, **kw) as resp:
        return resp.status, await resp.json()


async def test_key_create_use_and_revoke(gateway: Any, admin_headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as http:
        status, org = await _admin(http, "POST", gateway.url + "/admin/orgs", admin_headers, json={"name": "acme"})
        assert status == 201 and org["id"].startswith("org_")
        status, again = await _admin(http, "POST", gateway.url + "/admin/orgs", admin_headers, json={"name": "acme"})
        assert status == 409 and again["error"]["code"] == "conflict"
        status, created = await _admin(http, "POST", gateway.url + "/admin/keys", admin_headers,
                                       json={"org_id": org["id"], "name": "ci"})
        assert status == 201 and created["key"].startswith("sk-gw-")
        status, listed = await _admin(http, "GET", gateway.url + "/admin/keys", admin_headers)
        assert status == 200
        mine = [k for k in listed["data"] if k["id"] == created["id"]]
        assert mine and "key" not in mine[0]  # shown only once
        assert created["key"] not in str(listed)
        status, orgs = await _admin(http, "GET", gateway.url + "/admin/orgs", admin_headers)
        assert org["id"] in [o["id"] for o in orgs["data"]]

        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=created["key"], max_retries=0)
        r = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=1)
        assert r.choices

        status, revoked = await _admin(http, "DELETE", gateway.url + f"/admin/keys/{created['id']}", admin_headers)
        assert status == 200 and revoked["revoked_at"]
        try:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
            raise AssertionError("a revoked key was accepted")
        except openai.AuthenticationError:
            pass
        await client.close()


async def test_revocation_reaches_another_replica(backend: Backend, sims: Any, gateway: Any,
                                                  admin_headers: dict[str, str]) -> None:
    replica = await serve_gateway(gateway_settings(backend, [s.url for s in sims]))
    try:
        rt = gateway.app.runtime
        org = await rt.keys.get_or_create_org("replicated")
        created = await rt.keys.create_key(org.id, "k")
        other = openai.AsyncOpenAI(base_url=replica.url + "/v1", api_key=created.key, max_retries=0)
        assert (await other.models.list()).data  # cached as valid on the replica
        async with aiohttp.ClientSession() as http:
            status, _ = await _admin(http, "DELETE", gateway.url + f"/admin/keys/{created.view.id}", admin_headers)
            assert status == 200
        ttl = replica.app.runtime.settings.key_cache_ttl_s
        await asyncio.sleep(ttl + 0.1)
        try:
            await other.models.list()
            raise AssertionError("the replica still accepts a revoked key after its cache TTL")
        except openai.AuthenticationError:
            pass
        await other.close()
    finally:
        await replica.stop()


async def test_admin_requires_admin_key(gateway: Any, api_key: str) -> None:
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {api_key}"}):
            async with http.get(gateway.url + "/admin/orgs", headers=headers) as resp:
                assert resp.status == 401
                assert "error" in await resp.json()
        async with http.post(gateway.url + "/admin/keys", headers={"Authorization": "Bearer test-admin-key"},
                             json={"org_id": "org_missing"}) as resp:
            assert resp.status == 404
        async with http.post(gateway.url + "/admin/orgs", headers={"Authorization": "Bearer test-admin-key"},
                             json={"nme": "typo"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "name"


async def test_workers_added_and_removed_at_runtime(gateway: Any, admin_headers: dict[str, str],
                                                    backend: Backend, sims: Any) -> None:
    extra = await start_sim_server(SimConfig(worker_id="extra", time_scale=0.0))
    replica = await serve_gateway(gateway_settings(backend, [s.url for s in sims]))
    try:
        async with aiohttp.ClientSession() as http:
            status, worker = await _admin(http, "POST", gateway.url + "/admin/workers", admin_headers,
                                          json={"url": extra.url})
            assert status == 201 and worker["healthy"] and worker["models"] == [MODEL]
            status, listed = await _admin(http, "GET", gateway.url + "/admin/workers", admin_headers)
            assert worker["id"] in [w["id"] for w in listed["data"]]
            for _ in range(50):  # the other replica picks it up from SQL
                if replica.app.runtime.pool.get(worker["id"]) is not None:
                    break
                await asyncio.sleep(0.05)
            assert replica.app.runtime.pool.get(worker["id"]) is not None
            status, _ = await _admin(http, "DELETE", gateway.url + f"/admin/workers/{worker['id']}", admin_headers)
            assert status == 200
            status, listed = await _admin(http, "GET", gateway.url + "/admin/workers", admin_headers)
            assert worker["id"] not in [w["id"] for w in listed["data"]]
            status, err = await _admin(http, "DELETE", gateway.url + "/admin/workers/w-nope", admin_headers)
            assert status == 404 and err["error"]["code"] == "not_found"
            status, err = await _admin(http, "POST", gateway.url + "/admin/workers", admin_headers,
                                       json={"url": "ftp://x"})
            assert status == 400
    finally:
        await replica.stop()
        await extra.stop()


async def test_unhealthy_worker_gets_no_traffic_until_it_recovers(gateway: Any, api_key: str, sims: Any) -> None:
    sick = sims[0]
    sick.app.set_healthy(False)
    await gateway.app.runtime.pool.check_all()
    before = len(sick.app.recent_requests)
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
    for i in range(6):  # six conversations (one would stay on its worker), spread by load
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"x {i}"}],
                                             max_tokens=1)
    assert len(sick.app.recent_requests) == before
    sick.app.set_healthy(True)
    await gateway.app.runtime.pool.check_all()
    for i in range(6):  # six new conversations (those above stay where they were served), spread by load
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"y {i}"}],
                                             max_tokens=1)
    assert len(sick.app.recent_requests) > before
    await client.close()


async def test_health_and_ready(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/health") as resp:
            assert resp.status == 200
        async with http.get(gateway.url + "/ready") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["checks"]["workers"] and body["checks"]["database"]


def test_cli_keys_create(backend: Backend, monkeypatch: Any) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", backend.database_url)
    result = CliRunner().invoke(cli_app, ["keys", "create", "--org", "cli-org"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("sk-gw-")  # stderr names the database
    listed = CliRunner().invoke(cli_app, ["keys", "list"])
    assert listed.exit_code == 0 and result.stdout.strip()[:22] in listed.output
