"""Aliases and model allow-lists. A request for an alias is served, limited and billed as the model and the
answer names the served model; /v1/models lists models and aliases. Keys and organisations may carry an
allow-list (aliases included), set through the admin API, the partner API and the CLI; a model outside it is a
403 ``model_not_allowed`` in OpenAI's shape, and /v1/models lists only what the key may use. The check runs
from the key cache: no SQL on the request path."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.billing.test_metering import ledger_rows
from tests.conftest import ADMIN_KEY, MODEL, Backend, ServedGateway, gateway_settings, serve_gateway
from workersim.run import RunningSim, start_sim_server
from workersim.sim_settings import SimConfig

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OTHER = "other-model"
CATALOG = [{"name": MODEL, "aliases": ["gcf", "gcf-0825"]}, {"name": OTHER, "aliases": ["om"]}]


@pytest.fixture
async def fleet(backend: Backend) -> AsyncIterator[tuple[ServedGateway, RunningSim]]:
    main = await start_sim_server(SimConfig(worker_id="main", time_scale=0.0))
    other = await start_sim_server(SimConfig(worker_id="other", model=OTHER, time_scale=0.0, seed=2))
    gw = await serve_gateway(gateway_settings(backend, [main.url, other.url], models=CATALOG))
    yield gw, main
    await gw.stop()
    await main.stop()
    await other.stop()


def _client(gw: ServedGateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


async def _ask(gw: ServedGateway, key: str, model: str) -> str:
    async with _client(gw, key) as client:
        reply = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=3)
        return reply.model


async def _refused(gw: ServedGateway, key: str, model: str) -> None:
    async with _client(gw, key) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 403
    assert caught.value.body["code"] == "model_not_allowed" and caught.value.body["param"] == "model"  # type: ignore[index]
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]


async def _listed(gw: ServedGateway, key: str) -> set[str]:
    async with _client(gw, key) as client:
        return {m.id async for m in client.models.list()}


async def test_an_alias_is_served_and_billed_as_the_model(fleet: tuple[ServedGateway, RunningSim]) -> None:
    gw, main = fleet
    rt = gw.app.runtime
    org = await rt.keys.get_or_create_org("alias-" + secrets.token_hex(3))
    key = (await rt.keys.create_key(org.id, "k")).key
    assert await _ask(gw, key, "gcf") == MODEL  # the answer names the served model
    assert main.app.recent_requests[-1]["model"] == MODEL  # the worker is asked for the served name
    async with _client(gw, key) as client:
        stream = await client.chat.completions.create(model="gcf-0825", messages=[{"role": "user", "content": "x"}],
                                                      max_tokens=3, stream=True)
        assert {c.model async for c in stream} == {MODEL}
    rows = await ledger_rows(gw, org.id, 2)
    assert [(r.model, r.requested_model) for r in rows] == [(MODEL, "gcf"), (MODEL, "gcf-0825")]
    assert all(r.billed_ticks > 0 for r in rows)
    assert await _listed(gw, key) == {MODEL, "gcf", "gcf-0825", OTHER, "om"}


async def test_allow_lists_through_the_admin_api(fleet: tuple[ServedGateway, RunningSim]) -> None:
    gw, _ = fleet
    async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN, timeout=10) as admin:
        org = (await admin.post("/admin/orgs", json={"name": "allow-" + secrets.token_hex(3)})).json()
        made = await admin.post("/admin/keys", json={"org_id": org["id"], "models": ["om"]})
        assert made.status_code == 201 and made.json()["models"] == ["om"]
        key, key_id = made.json()["key"], made.json()["id"]
        assert await _ask(gw, key, OTHER) == OTHER and await _ask(gw, key, "om") == OTHER  # an alias allows its model
        await _refused(gw, key, MODEL)
        await _refused(gw, key, "gcf")
        assert await _listed(gw, key) == {OTHER, "om"}

        patched = await admin.patch(f"/admin/keys/{key_id}", json={"models": None})
        assert patched.status_code == 200 and patched.json()["models"] is None
        assert await _ask(gw, key, MODEL) == MODEL
        # The organisation's list binds every key of it (applied within the key cache TTL).
        limited = await admin.patch(f"/admin/orgs/{org['id']}", json={"models": [MODEL]})
        assert limited.status_code == 200 and limited.json()["models"] == [MODEL]
        await asyncio.sleep(0.6)
        await _refused(gw, key, OTHER)
        assert await _ask(gw, key, "gcf") == MODEL
        assert await _listed(gw, key) == {MODEL, "gcf", "gcf-0825"}
        bad = await admin.patch(f"/admin/orgs/{org['id']}", json={"models": ["a\x00"]})
        assert bad.status_code == 400


async def test_allow_lists_through_the_partner_api(fleet: tuple[ServedGateway, RunningSim]) -> None:
    gw, _ = fleet
    rt = gw.app.runtime
    org = await rt.keys.get_or_create_org("partner-" + secrets.token_hex(3))
    manager = (await rt.keys.create_key(org.id, "m", manage_keys=True, models=[MODEL])).key
    async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {manager}"}, timeout=10) as p:
        wider = await p.post("/v1/organization/keys", json={"name": "team", "models": [OTHER]})
        assert wider.status_code == 400 and wider.json()["error"]["param"] == "models"
        inherited = await p.post("/v1/organization/keys", json={"name": "team"})
        assert inherited.status_code == 201 and inherited.json()["models"] == [MODEL]
        team = inherited.json()["key"]
        await _refused(gw, team, OTHER)
        assert await _ask(gw, team, MODEL) == MODEL
        own = (await p.get("/v1/organization")).json()
        assert own["key_models"] == [MODEL] and own["models"] is None
