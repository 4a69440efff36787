"""Key management cannot escalate: a rotated key's expiry may only be shortened (the rotation cannot be
undone), and a manager key never mints or reshapes a key beyond its own limits and expiry."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from tests.limits.helpers import call, complete, new_key, org_with_plan


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _when(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite keeps naive UTC


def _refused(status: int, body: Any, param: str) -> None:
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param, body


async def test_a_rotated_keys_expiry_may_only_be_shortened(gateway: Any) -> None:
    base = gateway.url
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, base, "unrotate-" + secrets.token_hex(3), rpm=100)
        manager = await new_key(http, base, org, name="platform", manage_keys=True)
        old = await new_key(http, base, org, name="ci")
        status, new, _ = await call(http, "POST", base + f"/admin/keys/{old['id']}/rotate", json={"overlap_s": 600})
        assert status == 201
        status, rotated, _ = await call(http, "GET", base + f"/admin/keys/{old['id']}")
        ends = _when(rotated["expires_at"])
        later = (ends + timedelta(days=30)).isoformat()
        for headers, path in ((None, f"/admin/keys/{old['id']}"),
                              (_bearer(manager["key"]), f"/v1/organization/keys/{old['id']}")):
            for expires_at in (None, later):
                status, body, _ = await call(http, "PATCH", base + path, headers, json={"expires_at": expires_at})
                _refused(status, body, "expires_at")
        status, still, _ = await call(http, "GET", base + f"/admin/keys/{old['id']}")
        assert _when(still["expires_at"]) == ends
        sooner = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
        status, shortened, _ = await call(http, "PATCH", base + f"/admin/keys/{old['id']}", json={"expires_at": sooner})
        assert status == 200 and _when(shortened["expires_at"]) < ends
        status, renamed, _ = await call(http, "PATCH", base + f"/admin/keys/{old['id']}", json={"name": "ci-old"})
        assert status == 200 and renamed["name"] == "ci-old"  # other fields change as before
        status, _, _ = await call(http, "PATCH", base + f"/admin/keys/{new['id']}", json={"expires_at": None})
        assert status == 200  # the replacement is a key like any other


async def test_a_child_key_never_exceeds_its_parent(gateway: Any) -> None:
    base = gateway.url
    parent_expiry = datetime.now(UTC) + timedelta(days=7)
    async with aiohttp.ClientSession() as http:
        org, _ = await org_with_plan(http, base, "child-" + secrets.token_hex(3), rpm=100, tpm=1_000_000,
                                     key_tpd=50_000)
        manager = await new_key(http, base, org, name="platform", manage_keys=True, rpm=1, tpm=10_000,
                                expires_at=parent_expiry.isoformat())
        me = _bearer(manager["key"])
        mint = base + "/v1/organization/keys"

        # Nothing given: the child inherits the parent's limits (its own and the plan's per-key default) and
        # its expiry.
        status, child, _ = await call(http, "POST", mint, me, json={"name": "end-user"})
        assert status == 201, child
        assert (child["rpm"], child["tpm"], child["tpd"], child["concurrency"]) == (1, 10_000, 50_000, None)
        assert _when(child["expires_at"]) == parent_expiry
        assert [(await complete(http, base, child["key"]))[0] for _ in range(2)] == [200, 429]

        # Tighter is fine; what the parent has no own limit for is bounded by the organisation's.
        status, tight, _ = await call(http, "POST", mint, me, json={"rpm": 1, "tpm": 500, "concurrency": 2,
                                                                    "expires_at": (parent_expiry - timedelta(days=1))
                                                                    .isoformat()})
        assert status == 201 and (tight["tpm"], tight["concurrency"]) == (500, 2), tight
        for field, value in (("rpm", 2), ("tpm", 10_001), ("tpd", 50_001),
                             ("expires_at", (parent_expiry + timedelta(days=1)).isoformat())):
            status, body, _ = await call(http, "POST", mint, me, json={field: value})
            _refused(status, body, field)

        # Nor through a change: of a child, of the manager's own key.
        for key_id in (child["id"], manager["id"]):
            for field, value in (("rpm", 5), ("tpm", 20_000),
                                 ("expires_at", (parent_expiry + timedelta(hours=1)).isoformat())):
                status, body, _ = await call(http, "PATCH", base + f"/v1/organization/keys/{key_id}", me,
                                             json={field: value})
                _refused(status, body, field)
        status, cleared, _ = await call(http, "PATCH", base + f"/v1/organization/keys/{child['id']}", me,
                                        json={"rpm": None, "tpm": None, "expires_at": None})
        assert status == 200  # a null inherits the parent's, never lifts
        assert (cleared["rpm"], cleared["tpm"], _when(cleared["expires_at"])) == (1, 10_000, parent_expiry)
        status, lowered, _ = await call(http, "PATCH", base + f"/v1/organization/keys/{child['id']}", me,
                                        json={"tpm": 100})
        assert status == 200 and lowered["tpm"] == 100

        # The admin is bound by nothing of the sort.
        status, raised, _ = await call(http, "PATCH", base + f"/admin/keys/{child['id']}",
                                       json={"rpm": 50, "expires_at": None})
        assert status == 200 and raised["rpm"] == 50 and raised["expires_at"] is None
