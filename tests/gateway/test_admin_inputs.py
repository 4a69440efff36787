"""Absurd input to the admin, partner and usage APIs is a 4xx in OpenAI's error shape, never a 500: a NUL
byte in a name, URL or path id, a limit or budget beyond its column, a date at the edge of the calendar.
On both backends (PostgreSQL rejects NUL in text and integers beyond BIGINT; SQLite does not)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.gateway.test_errors import assert_openai_error
from tests.limits.helpers import ADMIN, call, new_key, org_with_plan

BIG = 2**63  # one past BIGINT


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _assert_4xx(status: int, body: Any, what: object) -> dict[str, Any]:
    assert 400 <= status < 500, (what, status, body)
    return assert_openai_error(body)


@pytest.mark.parametrize(("path", "body"), [
    ("/admin/orgs", {"name": "nul\x00org"}),
    ("/admin/keys", {"org_id": "org\x00x"}),
    ("/admin/plans", {"name": "nul\x00plan"}),
    ("/admin/workers", {"url": "http://127.0.0.1:1/\x00"}),
    ("/admin/workers", {"url": "http://host\x00name:8000"}),
    ("/admin/workers", {"url": "http://127.0.0.1:99999"}),
])
async def test_nul_bytes_and_bad_urls_in_bodies_are_400(gateway: Any, path: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        status, err, _ = await call(http, "POST", gateway.url + path, json=body)
    error = _assert_4xx(status, err, body)
    assert status == 400 and error["param"] in {"name", "org_id", "url"}


async def test_nul_bytes_in_path_ids_and_queries_are_400(gateway: Any) -> None:
    nul = quote("\x00")
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, "nul-" + secrets.token_hex(3), rpm=100)
        manager = await new_key(http, gateway.url, org, manage_keys=True)
        for method, path, headers, body in (
            ("GET", f"/admin/keys/key{nul}", ADMIN, None),
            ("PATCH", f"/admin/keys/key{nul}", ADMIN, {"rpm": 1}),
            ("DELETE", f"/admin/keys/key{nul}", ADMIN, None),
            ("POST", f"/admin/keys/key{nul}/rotate", ADMIN, {}),
            ("GET", f"/admin/orgs/org{nul}", ADMIN, None),
            ("GET", f"/admin/plans/plan{nul}", ADMIN, None),
            ("PUT", f"/admin/orgs/org{nul}/plan", ADMIN, {"plan_id": None}),
            ("PUT", f"/admin/orgs/{org}/plan", ADMIN, {"plan_id": "p\x00"}),
            ("DELETE", f"/admin/workers/w{nul}", ADMIN, None),
            ("GET", f"/admin/orgs/org{nul}/budget", ADMIN, None),
            ("PUT", f"/admin/orgs/{org}/budget", ADMIN, {"monthly_limit_usd": "1.00", "key_id": "k\x00"}),
            ("GET", f"/admin/orgs/org{nul}/usage", ADMIN, None),
            ("GET", f"/admin/keys?org_id=org{nul}", ADMIN, None),
            ("GET", f"/admin/usage?org_id=org{nul}", ADMIN, None),
            ("GET", f"/v1/organization/keys/key{nul}", _bearer(manager["key"]), None),
            ("DELETE", f"/v1/organization/keys/key{nul}", _bearer(manager["key"]), None),
            ("POST", "/v1/organization/keys", _bearer(manager["key"]), {"name": "end\x00user"}),
        ):
            status, err, _ = await call(http, method, gateway.url + path, headers, json=body)
            assert status == 400, (method, path, status, err)
            _assert_4xx(status, err, path)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/admin/plans", {"name": "big", "rpm": BIG}, "rpm"),
    ("/admin/plans", {"name": "big", "key_tpd": BIG}, "key_tpd"),
    ("/admin/plans", {"name": "big", "concurrency": 2**31}, "concurrency"),
    ("/admin/plans", {"name": "big", "tpm": 10**30}, "tpm"),
])
async def test_limits_beyond_their_column_are_400(gateway: Any, path: str, body: dict[str, Any], param: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, err, _ = await call(http, "POST", gateway.url + path, json={**body, "name": body["name"]
                                                                            + secrets.token_hex(3)})
    assert status == 400 and _assert_4xx(status, err, body)["param"] == param


async def test_key_limits_and_budgets_beyond_their_column_are_400(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        org, plan = await org_with_plan(http, gateway.url, "big-" + secrets.token_hex(3), rpm=100)
        manager = await new_key(http, gateway.url, org, manage_keys=True)
        largest = await new_key(http, gateway.url, org, rpm=2**63 - 1)  # the largest that fits is fine
        assert largest["rpm"] == 2**63 - 1
        for method, path, headers, body, param in (
            ("POST", "/admin/keys", ADMIN, {"org_id": org, "rpm": BIG}, "rpm"),
            ("POST", "/admin/keys", ADMIN, {"org_id": org, "concurrency": 2**31}, "concurrency"),
            ("PATCH", f"/admin/keys/{manager['id']}", ADMIN, {"tpm": BIG}, "tpm"),
            ("PATCH", f"/admin/plans/{plan}", ADMIN, {"rpm": BIG}, "rpm"),
            ("POST", "/v1/organization/keys", _bearer(manager["key"]), {"name": "u", "tpd": BIG}, "tpd"),
            ("PATCH", f"/v1/organization/keys/{manager['id']}", _bearer(manager["key"]), {"rpm": BIG}, "rpm"),
            ("PUT", f"/admin/orgs/{org}/budget", ADMIN, {"monthly_limit_ticks": BIG}, "monthly_limit_ticks"),
            ("PUT", f"/admin/orgs/{org}/budget", ADMIN, {"monthly_limit_usd": "99999999999999999"},
             "monthly_limit_usd"),
        ):
            status, err, _ = await call(http, method, gateway.url + path, headers, json=body)
            assert status == 400, (method, path, status, err)
            assert _assert_4xx(status, err, path)["param"] == param, (path, err)


@pytest.mark.parametrize("query", [
    "end=0001-01-01",
    "start=0001-01-01",
    "start=0001-01-01T00:00:00%2B05:00&end=0001-01-02",
    "end=9999-12-31T23:59:59",
    "start=9999-12-31&end=9999-12-31T23:00:00",
    "end=1969-12-31",
])
async def test_absurd_usage_dates_are_400(gateway: Any, api_key: str, query: str) -> None:
    async with aiohttp.ClientSession() as http:
        for path, headers in (("/v1/usage", _bearer(api_key)), ("/admin/usage", ADMIN)):
            status, err, _ = await call(http, "GET", f"{gateway.url}{path}?{query}", headers)
            assert status == 400, (path, query, status, err)
            assert _assert_4xx(status, err, query)["param"] in {"start", "end"}


async def test_absurd_dates_in_bodies_are_400(gateway: Any) -> None:
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, gateway.url, "dates-" + secrets.token_hex(3), rpm=100)
        for method, path, body, param in (
            ("POST", "/admin/keys", {"org_id": org, "expires_at": "0001-01-01T00:00:00+05:00"}, "expires_at"),
            ("POST", "/admin/keys", {"org_id": org, "expires_at": "9999-12-31T23:59:59"}, "expires_at"),
            ("POST", f"/admin/orgs/{org}/price-plans", {"name": "p", "starts_at": "0001-01-01"}, "starts_at"),
            ("GET", f"/admin/orgs/{org}/usage?end=0001-01-01", None, "end"),
        ):
            status, err, _ = await call(http, method, gateway.url + path, json=body)
            assert status == 400, (path, status, err)
            assert _assert_4xx(status, err, path)["param"] == param, (path, err)
