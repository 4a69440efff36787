"""PostgreSQL down (a private server, stopped mid-test): keys verified before keep working from the key
cache for a bounded grace, unknown keys get an OpenAI-shaped 503 (never a 500), and a revoked key still
stops within the cache TTL while SQL is up."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import aiohttp
import pytest

from gateway.services.keys import KEY_PREFIX
from tests.conftest import Backend, gateway_settings, serve_gateway
from tests.limits.helpers import call, complete
from tests.private_postgres import private_postgres

TTL = 0.3
GRACE = 3.0


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_verified_keys_ride_out_a_postgres_outage(sims: Any, caplog: pytest.LogCaptureFixture) -> None:
    async with private_postgres() as pg:
        backend = Backend("shared", pg.url, "", "gw")  # no Redis: only SQL goes away
        gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], key_cache_ttl_s=TTL,
                                                  key_stale_grace_s=GRACE, metering_enabled=False))
        try:
            rt = gw.app.runtime
            org = await rt.keys.create_org("outage-" + secrets.token_hex(3))
            key = (await rt.keys.create_key(org.id, "live")).key
            revoked = await rt.keys.create_key(org.id, "revoked")
            async with aiohttp.ClientSession() as http:
                assert (await complete(http, gw.url, key))[0] == 200
                assert (await complete(http, gw.url, revoked.key))[0] == 200
                # SQL up: a revocation (made elsewhere: this replica's cache is not told) stops the key
                # within the TTL.
                await rt.keys.revoke_key(revoked.view.id)
                await asyncio.sleep(TTL + 0.05)
                assert (await complete(http, gw.url, revoked.key))[0] == 401
                assert (await complete(http, gw.url, key))[0] == 200
                verified_at = time.monotonic()

                await asyncio.to_thread(pg.stop)
                await asyncio.sleep(TTL + 0.05)  # every cached entry is past its TTL now
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="gateway.auth"):
                    for _ in range(5):
                        status, body, _ = await complete(http, gw.url, key)
                        assert status == 200, body
                    status, me, _ = await call(http, "GET", gw.url + "/v1/organization", _bearer(key))
                    assert status == 200 and me["id"] == org.id
                    # The revoked key's answer is cached too: it stays refused.
                    assert (await complete(http, gw.url, revoked.key))[0] == 401
                    unknown = f"{KEY_PREFIX}{secrets.token_hex(8)}_{secrets.token_urlsafe(16)}"
                    for path in ("/v1/chat/completions", "/v1/organization"):
                        if path == "/v1/chat/completions":
                            status, body, headers = await complete(http, gw.url, unknown)
                        else:
                            status, body, headers = await call(http, "GET", gw.url + path, _bearer(unknown))
                        assert status == 503, (path, body)
                        assert body["error"]["code"] == "auth_unavailable"
                        assert body["error"]["type"] == "service_unavailable"
                        assert headers["retry-after"] == "1"
                warnings = [r for r in caplog.records if r.name == "gateway.auth" and r.levelno >= logging.WARNING]
                assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per outage
                assert "database" in warnings[0].getMessage()
                stats = rt.key_cache.stats
                assert stats.stale_served >= 6 and stats.unavailable == 2
                async with http.get(gw.url + "/metrics") as resp:
                    exposition = await resp.text()
                assert f"gateway_auth_stale_served_total {float(stats.stale_served)}" in exposition
                assert "gateway_auth_unavailable_total 2.0" in exposition

                # The grace is bounded: past it, the key cannot be vouched for any more.
                await asyncio.sleep(max(0.0, verified_at + TTL + GRACE + 0.05 - time.monotonic()))
                status, body, _ = await complete(http, gw.url, key)
                assert status == 503 and body["error"]["code"] == "auth_unavailable"

                await asyncio.to_thread(pg.start)
                with caplog.at_level(logging.INFO, logger="gateway.auth"):
                    for _ in range(100):  # the first lookup after a failure waits a moment (no retry storm)
                        status, _, _ = await complete(http, gw.url, key)
                        if status == 200:
                            break
                        await asyncio.sleep(0.05)
                assert status == 200
                assert any("reachable again" in r.getMessage() for r in caplog.records if r.name == "gateway.auth")
                assert (await complete(http, gw.url, revoked.key))[0] == 401
        finally:
            await gw.stop()


async def test_embedded_sqlite_missing_database_answers_alike(sims: Any, tmp_path: Any) -> None:
    """The embedded database gone (its file removed): the same rule, on SQLite."""
    db_file = tmp_path / "gateway.db"
    backend = Backend("embedded", f"sqlite:///{db_file}", "", "gw")
    gw = await serve_gateway(gateway_settings(backend, [s.url for s in sims], key_cache_ttl_s=TTL,
                                              key_stale_grace_s=GRACE, metering_enabled=False))
    try:
        rt = gw.app.runtime
        org = await rt.keys.create_org("sqlite-outage")
        key = (await rt.keys.create_key(org.id, "live")).key
        async with aiohttp.ClientSession() as http:
            assert (await complete(http, gw.url, key))[0] == 200
            await rt.engine.dispose()  # no pooled connection keeps the old file open
            for path in tmp_path.glob("gateway.db*"):
                path.unlink()
            db_file.mkdir()  # what SQLite cannot open
            await asyncio.sleep(TTL + 0.05)
            status, body, _ = await complete(http, gw.url, key)
            assert status == 200, body
            unknown = f"{KEY_PREFIX}{secrets.token_hex(8)}_{secrets.token_urlsafe(16)}"
            status, body, _ = await complete(http, gw.url, unknown)
            assert status == 503 and body["error"]["code"] == "auth_unavailable"
            assert rt.key_cache.stats.stale_served >= 1
    finally:
        await gw.stop()
