"""The usage API over HTTP on both backends: figures from the rollups match what the SDK saw, grouping by
key (with names), model and end user, rate-limited refusals, isolation between organisations, the admin
view and clear 400s for bad ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import openai
import pytest

from tests.conftest import MODEL, ServedGateway
from tests.usage.helpers import ADMIN, chat, get, org_with_key, wait_for_requests


async def test_own_usage_matches_the_traffic_and_groups_by_key_model_and_end_user(gateway: ServedGateway) -> None:
    org, key_id, key = await org_with_key(gateway, name="ci-bot")
    output = await chat(gateway, key, 2, user="alice") + await chat(gateway, key, 1, stream=True)
    body = await wait_for_requests(gateway, key, 3)
    totals = body["totals"]
    assert (body["object"], body["org_id"], body["bucket"], body["group_by"]) == ("usage", org, "day", "key")
    assert totals["requests"] == 3 and totals["errors"] == 0 and totals["rate_limited"] == 0
    assert totals["output_tokens"] == output
    assert totals["billed_cost_ticks"] == totals["list_cost_ticks"] > 0
    assert totals["billed_cost_usd"] == f"{totals['billed_cost_ticks'] / 10**10:.10f}".rstrip("0")
    assert len(body["data"]) in (8, 9)  # the last 7 days by day, both partial ends included
    assert sum(b["requests"] for b in body["data"]) == 3
    assert [(g["group"], g["name"], g["requests"]) for g in body["groups"]] == [(key_id, "ci-bot", 3)]

    _, by_user = await get(gateway, "/v1/usage", key, group_by="end_user", bucket="hour",
                           start=(datetime.now(UTC) - timedelta(hours=3)).isoformat())
    assert sorted((g["name"], g["requests"]) for g in by_user["groups"]) == [("(none)", 1), ("alice", 2)]
    assert len(by_user["data"]) in (3, 4) and by_user["totals"]["output_tokens"] == output
    _, by_model = await get(gateway, "/v1/usage", key, group_by="model")
    assert [(g["group"], g["requests"]) for g in by_model["groups"]] == [(MODEL, 3)]

    status, me = await get(gateway, "/v1/usage/me", key)
    assert status == 200 and me["org_id"] == org and me["key_id"] == key_id and me["org_name"].startswith("usage-")


async def test_rate_limited_requests_are_counted_but_never_billed(gateway: ServedGateway) -> None:
    _, _, key = await org_with_key(gateway, rpm=1)
    await chat(gateway, key, 1)
    with pytest.raises(openai.RateLimitError):
        await chat(gateway, key, 1)
    body = await wait_for_requests(gateway, key, 1, rate_limited=1)
    assert (body["totals"]["requests"], body["totals"]["rate_limited"]) == (1, 1)
    assert body["groups"][0]["rate_limited"] == 1


async def test_a_key_reads_only_its_own_organisation(gateway: ServedGateway) -> None:
    org_a, _, key_a = await org_with_key(gateway)
    org_b, _, key_b = await org_with_key(gateway)
    await chat(gateway, key_a, 2)
    await wait_for_requests(gateway, key_a, 2)
    # B sees nothing of A's, even when it asks for A's organisation by name.
    status, body = await get(gateway, "/v1/usage", key_b, org_id=org_a)
    assert status == 200 and body["org_id"] == org_b and body["totals"]["requests"] == 0 and body["groups"] == []
    # The admin API refuses API keys; the admin key reads either organisation or all of them.
    status, body = await get(gateway, "/admin/usage", key_a, org_id=org_a)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    admin_key = ADMIN["Authorization"].split()[1]
    _, one = await get(gateway, "/admin/usage", admin_key, org_id=org_a)
    _, other = await get(gateway, "/admin/usage", admin_key, org_id=org_b)
    _, every = await get(gateway, "/admin/usage", admin_key)
    assert (one["totals"]["requests"], other["totals"]["requests"]) == (2, 0)
    assert every["org_id"] is None and every["totals"]["requests"] >= 2
    # And the usage API refuses the admin key: it has no organisation.
    status, body = await get(gateway, "/v1/usage", admin_key)
    assert status == 401


@pytest.mark.parametrize(("params", "message"), [
    ({"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, "end must be after start"),
    ({"start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "at most 366 days"),
    ({"start": "2026-09-01T00:00:00Z", "end": "2026-11-01T00:00:00Z", "bucket": "hour"}, "use bucket=day"),
    ({"start": "yesterday"}, "start"),
    ({"bucket": "week"}, "bucket"),
    ({"group_by": "worker"}, "group_by"),
])
async def test_bad_parameters_are_clear_400s(gateway: ServedGateway, params: dict[str, str], message: str) -> None:
    _, _, key = await org_with_key(gateway)
    status, body = await get(gateway, "/v1/usage", key, **params)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error" and message in body["error"]["message"]


async def test_usage_routes_are_in_the_openapi_schema(gateway: ServedGateway) -> None:
    async with aiohttp.ClientSession() as http, http.get(gateway.url + "/openapi.json") as resp:
        schema = await resp.json()
    assert {"/v1/usage", "/v1/usage/me", "/admin/usage"} <= set(schema["paths"])
    figures = schema["components"]["schemas"]["UsageFigures"]["properties"]
    assert {"cached_share", "mean_output_tokens_per_second", "billed_cost_usd", "rate_limited"} <= set(figures)


async def test_dashboard_is_served_from_the_package_without_data(gateway: ServedGateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/dashboard") as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert "/dashboard/static/dashboard.js" in page and "sk-gw-" in page  # a placeholder, no data
        async with http.get(gateway.url + "/dashboard/static/dashboard.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert "/v1/usage" in await resp.text()
        async with http.get(gateway.url + "/dashboard/static/..%2Fdashboard.py") as resp:
            assert resp.status == 404
