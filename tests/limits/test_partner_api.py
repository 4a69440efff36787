"""Partner self-service under /v1/organization, the admin API for plans and keys, rotation, the OpenAPI
schema and the CLI verbs."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli_app
from gateway.pipeline.principal import Principal
from tests.conftest import Backend
from tests.limits.helpers import ADMIN, call, complete, new_key, org_with_plan


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_org_key_sees_and_manages_only_its_own_org(gateway: Any) -> None:
    base = gateway.url
    async with aiohttp.ClientSession() as http:
        org_a, _ = await org_with_plan(http, base, "partner-a-" + secrets.token_hex(3), rpm=100, key_rpm=20)
        org_b, _ = await org_with_plan(http, base, "partner-b-" + secrets.token_hex(3), rpm=100)
        manager = await new_key(http, base, org_a, name="platform", manage_keys=True)
        member = await new_key(http, base, org_a, name="team")
        other = await new_key(http, base, org_b, name="b-key")

        status, me, _ = await call(http, "GET", base + "/v1/organization", _bearer(member["key"]))
        assert status == 200 and me["id"] == org_a and me["key_id"] == member["id"]
        assert me["limits"]["org_rpm"] == 100 and me["limits"]["key_rpm"] == 20

        status, listed, _ = await call(http, "GET", base + "/v1/organization/keys", _bearer(member["key"]))
        ids = {k["id"] for k in listed["data"]}
        assert status == 200 and {manager["id"], member["id"]} <= ids and other["id"] not in ids
        assert all(k["org_id"] == org_a for k in listed["data"]) and "key" not in listed["data"][0]

        # Another organisation's key is invisible, and cannot be changed, rotated or revoked.
        for method, path, body in (("GET", "", None), ("PATCH", "", {"rpm": 1}), ("POST", "/rotate", {}),
                                   ("DELETE", "", None)):
            status, err, _ = await call(http, method, base + f"/v1/organization/keys/{other['id']}{path}",
                                        _bearer(manager["key"]), json=body)
            assert status == 404 and err["error"]["code"] == "not_found", (method, path, err)
        assert (await complete(http, base, other["key"]))[0] == 200  # untouched

        # A plain key reads but does not manage.
        status, err, _ = await call(http, "POST", base + "/v1/organization/keys", _bearer(member["key"]),
                                    json={"name": "x"})
        assert status == 403 and err["error"]["type"] == "permission_error"

        # A manager key creates a per-end-user key with its own tighter limit and an expiry.
        status, created, _ = await call(http, "POST", base + "/v1/organization/keys", _bearer(manager["key"]),
                                        json={"name": "end-user-42", "rpm": 1,
                                              "expires_at": "2099-01-01T00:00:00Z"})
        assert status == 201 and created["org_id"] == org_a and created["rpm"] == 1 and created["key"]
        assert [(await complete(http, base, created["key"]))[0] for _ in range(2)] == [200, 429]
        status, patched, _ = await call(http, "PATCH", base + f"/v1/organization/keys/{created['id']}",
                                        _bearer(manager["key"]), json={"rpm": 5, "name": "end-user-42b"})
        assert status == 200 and patched["rpm"] == 5 and patched["name"] == "end-user-42b"
        status, revoked, _ = await call(http, "DELETE", base + f"/v1/organization/keys/{created['id']}",
                                        _bearer(manager["key"]))
        assert status == 200 and revoked["revoked_at"]
        assert (await complete(http, base, created["key"]))[0] == 401


async def test_admin_and_api_keys_never_cross(gateway: Any, api_key: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, err, _ = await call(http, "GET", gateway.url + "/v1/organization/keys", ADMIN)
        assert status == 401 and err["error"]["code"] == "invalid_api_key"
        status, _, _ = await complete(http, gateway.url, "test-admin-key")
        assert status == 401
        for path in ("/admin/plans", "/admin/keys", "/admin/limits/stats"):
            status, err, _ = await call(http, "GET", gateway.url + path, _bearer(api_key))
            assert status == 401, path


async def test_rotation_keeps_the_old_secret_for_the_overlap(gateway: Any) -> None:
    base = gateway.url
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, base, "rotate-" + secrets.token_hex(3), rpm=100)
        old = await new_key(http, base, org, name="ci", rpm=50)
        status, new, _ = await call(http, "POST", base + f"/admin/keys/{old['id']}/rotate", json={"overlap_s": 60})
        assert status == 201 and new["key"] != old["key"] and new["id"] != old["id"]
        assert new["name"] == "ci" and new["rpm"] == 50 and new["org_id"] == org
        status, old_now, _ = await call(http, "GET", base + f"/admin/keys/{old['id']}")
        assert old_now["replaced_by"] == new["id"] and old_now["expires_at"]
        assert (await complete(http, base, old["key"]))[0] == 200  # still inside the overlap
        assert (await complete(http, base, new["key"]))[0] == 200
        status, _, _ = await call(http, "POST", base + f"/admin/keys/{old['id']}/rotate", json={})
        assert status == 409
        # Rotating with no overlap ends the old secret at once (on this replica; others within the TTL).
        status, newer, _ = await call(http, "POST", base + f"/admin/keys/{new['id']}/rotate", json={"overlap_s": 0})
        assert status == 201
        await asyncio.sleep(gateway.app.runtime.settings.key_cache_ttl_s + 0.1)
        assert (await complete(http, base, new["key"]))[0] == 401
        assert (await complete(http, base, newer["key"]))[0] == 200


async def test_admin_plans_crud_and_validation(gateway: Any) -> None:
    base = gateway.url
    name = "crud-" + secrets.token_hex(3)
    async with aiohttp.ClientSession() as http:
        status, plan, _ = await call(http, "POST", base + "/admin/plans",
                                     json={"name": name, "rpm": 60, "tpm": 150000, "fail_open": False})
        assert status == 201 and plan["object"] == "plan" and plan["fail_open"] is False
        status, _, _ = await call(http, "POST", base + "/admin/plans", json={"name": name})
        assert status == 409
        status, bad, _ = await call(http, "POST", base + "/admin/plans", json={"name": "bad", "rpm": 0})
        assert status == 400 and bad["error"]["param"] == "rpm"
        status, by_name, _ = await call(http, "GET", base + f"/admin/plans/{name}")
        assert status == 200 and by_name["id"] == plan["id"]
        status, patched, _ = await call(http, "PATCH", base + f"/admin/plans/{plan['id']}", json={"rpm": None})
        assert status == 200 and patched["rpm"] is None and patched["tpm"] == 150000
        status, org, _ = await call(http, "POST", base + "/admin/orgs", json={"name": name + "-org"})
        status, _, _ = await call(http, "PUT", base + f"/admin/orgs/{org['id']}/plan", json={"plan_id": name})
        assert status == 200
        status, _, _ = await call(http, "DELETE", base + f"/admin/plans/{plan['id']}")
        assert status == 409  # in use
        status, _, _ = await call(http, "PUT", base + "/admin/orgs/org_nope/plan", json={"plan_id": None})
        assert status == 404
        status, _, _ = await call(http, "PUT", base + f"/admin/orgs/{org['id']}/plan", json={"plan_id": None})
        status, deleted, _ = await call(http, "DELETE", base + f"/admin/plans/{plan['id']}")
        assert status == 200 and deleted["deleted"] is True
        status, listed, _ = await call(http, "GET", base + "/admin/plans")
        assert plan["id"] not in {p["id"] for p in listed["data"]}
        status, stats, _ = await call(http, "GET", base + "/admin/limits/stats")
        assert status == 200 and "refused_requests" in stats


async def test_openapi_documents_the_admin_and_partner_api(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http, http.get(gateway.url + "/openapi.json") as resp:
        schema = await resp.json()
    paths = schema["paths"]
    for path in ("/admin/plans", "/admin/plans/{plan_id}", "/admin/orgs/{org_id}/plan", "/admin/keys/{key_id}",
                 "/admin/keys/{key_id}/rotate", "/admin/limits/stats", "/v1/organization",
                 "/v1/organization/keys", "/v1/organization/keys/{key_id}/rotate"):
        assert path in paths, path
    ok = paths["/admin/plans"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PlanOut")
    for model in ("PlanOut", "KeyOut", "CreatedKeyOut", "OrgOut", "OwnOrgOut", "LimitStatsOut"):
        assert model in schema["components"]["schemas"], model


async def _verify(database_url: str, key: str) -> Principal | None:
    from gateway.config import Settings
    from gateway.db import engine as db
    from gateway.services.keys import KeyService

    engine = db.make_engine(Settings(database_url=database_url).sqlalchemy_url)
    try:
        return await KeyService(db.sessionmaker(engine)).verify(*key[len("sk-gw-"):].split("_", 1))
    finally:
        await engine.dispose()


def test_cli_verbs(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", backend.database_url)
    runner = CliRunner()
    name = "cli-plan-" + secrets.token_hex(3)
    created = runner.invoke(cli_app, ["plans", "create", name, "--rpm", "7", "--key-rpm", "2", "--fail-closed"])
    assert created.exit_code == 0, created.output
    listed = runner.invoke(cli_app, ["plans", "list"])
    assert name in listed.output and "rpm=7" in listed.output and "fail-closed" in listed.output
    org = "cli-org-" + secrets.token_hex(3)
    assert runner.invoke(cli_app, ["orgs", "set-plan", org, name]).exit_code == 0
    key = runner.invoke(cli_app, ["keys", "create", "--org", org]).stdout.strip()
    principal = asyncio.run(_verify(backend.database_url, key))
    assert principal is not None and principal.limits is not None
    assert principal.limits.org_rpm == 7 and principal.limits.key_rpm == 2 and principal.limits.fail_open is False
    key_id = principal.key_id
    limited = runner.invoke(cli_app, ["keys", "limits", key_id, "--rpm", "1"])
    assert limited.exit_code == 0 and "rpm=1" in limited.output
    rotated = runner.invoke(cli_app, ["keys", "rotate", key_id, "--overlap", "30"])
    assert rotated.exit_code == 0 and rotated.output.strip().splitlines()[-1].startswith("sk-gw-")
    missing = runner.invoke(cli_app, ["keys", "rotate", "key_nope"])
    assert missing.exit_code == 1 and "not found" in missing.output
