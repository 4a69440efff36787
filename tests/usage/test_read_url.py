"""GATEWAY_DATABASE_READ_URL: the usage API (and so the dashboard, which reads it) reads through its own URL, a
role that may only SELECT, while keys, the ledger and everything else keep using GATEWAY_DATABASE_URL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.config import Settings
from gateway.db import engine as db
from tests.conftest import PG_ADMIN_DSN, REDIS_URL, Backend, gateway_settings, serve_gateway
from tests.usage.helpers import ADMIN, chat, get, org_with_key, wait_for_requests
from workersim.run import RunningSim


@pytest.fixture
async def primary_and_reader() -> AsyncIterator[tuple[str, str, str]]:
    """A migrated database of its own and a login role with SELECT only on its tables:
    ``(primary URL, read-only URL, role)``."""
    name, role = "gw_read_" + secrets.token_hex(4), "gw_reader_" + secrets.token_hex(4)
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    primary = f"{base}/{name}"
    await db.upgrade(Settings(database_url=primary).sqlalchemy_url)
    conn = await asyncpg.connect(primary)
    try:
        for statement in (f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC',
                          f'GRANT CONNECT ON DATABASE "{name}" TO "{role}"',
                          'REVOKE CREATE ON SCHEMA public FROM PUBLIC',
                          f'GRANT USAGE ON SCHEMA public TO "{role}"',
                          f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'):
            await conn.execute(statement)
    finally:
        await conn.close()
    host = base.split("@", 1)[1]
    yield primary, f"postgresql://{role}@{host}/{name}", role
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await admin.close()


async def test_usage_reads_go_through_the_read_only_url(primary_and_reader: tuple[str, str, str],
                                                        sims: list[RunningSim]) -> None:
    primary, reader, role = primary_and_reader
    # The role really is read-only.
    conn = await asyncpg.connect(reader)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM usage_hourly")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE intruder (x int)")
    finally:
        await conn.close()

    backend = Backend("shared", primary, REDIS_URL, "gwtest-read-" + secrets.token_hex(4))
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], database_read_url=reader))
    try:
        org, key_id, key = await org_with_key(served, name="reader-check")
        await chat(served, key, 3)
        body = await wait_for_requests(served, key, 3)
        assert body["org_id"] == org and body["totals"]["requests"] == 3
        assert [(g["group"], g["name"]) for g in body["groups"]] == [(key_id, "reader-check")]
        status, admin_view = await get(served, "/admin/usage", ADMIN["Authorization"].split()[1], org_id=org)
        assert status == 200 and admin_view["totals"]["requests"] == 3
        # Those figures were read by the read-only role: nothing else connects as it (its pooled connections
        # show the pool's reset, ROLLBACK, as their last statement).
        conn = await asyncpg.connect(primary)
        try:
            queries = [r["query"] for r in await conn.fetch(
                "SELECT query FROM pg_stat_activity WHERE usename = $1", role)]
        finally:
            await conn.close()
        assert queries, "the usage API never connected through GATEWAY_DATABASE_READ_URL"
    finally:
        await served.stop()
