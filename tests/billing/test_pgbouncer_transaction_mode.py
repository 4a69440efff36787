"""PostgreSQL through PgBouncer in transaction pool mode (GATEWAY_DATABASE_PGBOUNCER=true).

A private PgBouncer (tests/private_pgbouncer.py) on a free loopback port fronts the shared server with 2
server connections for every client, so the replicas' pools (10 + 20 connections per engine) really do take
turns on the same server connections. Through it, on a fresh database: the migrations at start, organisation
and key creation and the key lookup of each request, two replicas' ledger writers metering every request
once, two writers racing on the same batch, the usage API reading through its read URL, the monthly
partitions created by concurrent callers (transaction-level advisory lock), and a Stripe sync.

PgBouncer is Debian's package (.ci/run installs it); missing, the test fails and says so, it never skips.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import openai
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import billing_queries
from billing.ledger.ledger_tables import UsageRow
from billing.ledger.partitions import LedgerPartitions, add_months, month_start, partition_name
from billing.ledger.writer import LedgerWriter
from gateway.config import Settings
from gateway.db import engine as db
from gateway.db.connect_options import connect_options
from tests.billing.conftest import make_record
from tests.billing.stripe_fixtures import stripe_server
from tests.billing.test_metering import ledger_rows
from tests.conftest import MODEL, PG_ADMIN_DSN, REDIS_URL, Backend, gateway_settings, scratch_database, serve_gateway
from tests.private_pgbouncer import INSTALL, PrivatePgBouncer, pgbouncer_binary, private_pgbouncer
from tests.usage.helpers import get
from workersim.run import RunningSim

REQUESTS = 24


@pytest.fixture
async def bouncer() -> AsyncIterator[PrivatePgBouncer]:
    if pgbouncer_binary() is None:  # CI installs it; a missing PgBouncer fails the test, never skips it
        pytest.fail(f"pgbouncer is missing: {INSTALL}")
    async with private_pgbouncer(PG_ADMIN_DSN, pool_mode="transaction", pool_size=2) as running:
        yield running


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    """A database of its own on the shared server (the migrations run on it through PgBouncer): its name."""
    async with scratch_database("gw_pgbouncer_") as url:
        yield url.rsplit("/", 1)[1]


async def test_the_gateway_and_its_ledger_run_through_pgbouncer_in_transaction_mode(
        bouncer: PrivatePgBouncer, fresh_database: str, redis_prefix: str, sims: list[RunningSim]) -> None:
    url = bouncer.url_for(fresh_database)
    backend = Backend("shared", url, REDIS_URL, f"{redis_prefix}-pgb-{secrets.token_hex(2)}")
    async with stripe_server() as stripe:
        settings = gateway_settings(backend, [s.url for s in sims], database_pgbouncer=True, database_read_url=url,
                                    ledger_flush_interval_s=0.05, stripe_api_key="sk_test_pgbouncer",
                                    stripe_api_base=stripe.url, stripe_settle_delay_s=0,
                                    stripe_sync_interval_s=3600)
        assert "pgbouncer=true" in settings.sqlalchemy_url and "pgbouncer=true" in settings.sqlalchemy_read_url
        replicas = [await serve_gateway(settings) for _ in range(2)]  # each runs the migrations at start
        try:
            rt = replicas[0].app.runtime
            org = await rt.keys.create_org("pgbouncer-" + secrets.token_hex(3))
            key = (await rt.keys.create_key(org.id, "k")).key
            clients = [openai.AsyncOpenAI(base_url=r.url + "/v1", api_key=key, max_retries=0, timeout=20)
                       for r in replicas]
            try:
                await asyncio.gather(*(clients[i % 2].chat.completions.create(
                    model=MODEL, max_tokens=4, messages=[{"role": "user", "content": f"count {i}"}])
                    for i in range(REQUESTS)))
            finally:
                for c in clients:
                    await c.close()

            # Both replicas' writers (two consumers each) wrote the records, each once.
            rows = await ledger_rows(replicas[0], org.id, REQUESTS)
            assert len(rows) == REQUESTS and len({r.request_id for r in rows}) == REQUESTS
            for served in replicas:
                await served.app.runtime.billing.flush()
            assert len(await ledger_rows(replicas[1], org.id, REQUESTS)) == REQUESTS

            # The usage API reads through its read URL (its own engine, behind the same PgBouncer).
            assert rt.usage_engine is not None
            for _ in range(100):
                status, body = await get(replicas[1], "/v1/usage", key)
                assert status == 200, body
                if body["totals"]["requests"] == REQUESTS:
                    break
                await asyncio.sleep(0.05)
            assert body["totals"]["requests"] == REQUESTS

            # Two writers (one per replica's engine) race on the same records: each lands once.
            late = "pgb_" + secrets.token_hex(4)
            start = int((time.time() - 7200) * 1000)
            records = [make_record(late, i, started_at_ms=start + i) for i in range(40)]
            writers = [LedgerWriter(r.app.runtime.engine) for r in replicas]
            written = await asyncio.gather(*(writers[i % 2].write(records[i % 3 * 10:]) for i in range(6)))
            assert sum(written) == 40
            async with rt.engine.connect() as conn:
                count = (await conn.execute(select(func.count()).where(UsageRow.org_id == late))).scalar_one()
            assert count == 40

            # Partitions months ahead, created by callers racing under the advisory lock: each once.
            now = datetime.now(UTC)
            created = await asyncio.gather(*(LedgerPartitions(r.app.runtime.engine).ensure(now, months_ahead=5)
                                             for r in replicas for _ in range(3)))
            names = [n for batch in created for n in batch]
            assert len(names) == len(set(names))
            months = await LedgerPartitions(rt.engine).months()
            assert {partition_name(add_months(month_start(now), n)) for n in range(6)} <= {
                partition_name(m) for m in months}

            # The Stripe sync (on one replica, under its Redis lock) sends the closed hours once.
            async with rt.sessions() as session:
                await billing_queries.set_customer(session, late, "cus_pgbouncer")
                await session.commit()
            assert await replicas[1].app.runtime.billing.sync_once()
            sent = len(stripe.server.state.events)
            assert sent >= 3
            async with rt.engine.connect() as conn:
                unsent = (await conn.execute(select(func.count()).where(
                    UsageRow.org_id == late, UsageRow.stripe_batch.is_(None)))).scalar_one()
            assert unsent == 0
            assert await replicas[0].app.runtime.billing.sync_once()
            assert len(stripe.server.state.events) == sent
        finally:
            for served in replicas:
                await served.stop()


async def _two_transactions(engine: AsyncEngine, i: int) -> int:
    """Two statements in two transactions on one pooled connection: ``i + 1``."""
    async with engine.connect() as conn:
        first = int((await conn.execute(text("SELECT CAST(:i AS int)"), {"i": i})).scalar_one())
        await conn.commit()
        return first + int((await conn.execute(text("SELECT 1"))).scalar_one())


async def test_without_the_setting_the_shared_server_connections_break_named_statements(
        bouncer: PrivatePgBouncer, fresh_database: str) -> None:
    """Why the setting exists, and proof that this PgBouncer really shares its server connections: asyncpg's
    default named, cached statements fail behind it."""
    plain = Settings(database_url=bouncer.url_for(fresh_database)).sqlalchemy_url
    assert "pgbouncer=" not in plain
    engine = db.make_engine(plain)
    try:
        with pytest.raises(DBAPIError, match="prepared statement"):
            for _ in range(20):
                await asyncio.gather(*(_two_transactions(engine, i) for i in range(40)))
    finally:
        await engine.dispose()


async def test_session_mode_needs_no_setting_but_a_server_connection_per_client_connection(
        fresh_database: str) -> None:
    """In session mode a client keeps its server connection: the named, cached statements work as they are,
    but every pooled connection holds a server connection (size PgBouncer's pool for all of them)."""
    if pgbouncer_binary() is None:
        pytest.fail(f"pgbouncer is missing: {INSTALL}")
    async with private_pgbouncer(PG_ADMIN_DSN, pool_mode="session", pool_size=40) as session_bouncer:
        engine = db.make_engine(Settings(database_url=session_bouncer.url_for(fresh_database)).sqlalchemy_url)
        try:
            for _ in range(5):
                assert sum(await asyncio.gather(*(_two_transactions(engine, i) for i in range(25)))) == \
                    sum(range(25)) + 25
        finally:
            await engine.dispose()


def test_the_settings_put_the_engine_options_on_both_urls_and_the_engine_takes_them_off() -> None:
    settings = Settings(database_url="postgresql://u@db:6432/gw?ssl=require",
                        database_read_url="postgres://u@replica:6432/gw", database_pgbouncer=True,
                        database_pool_size=4, database_max_overflow=0)
    assert settings.sqlalchemy_url == ("postgresql+asyncpg://u@db:6432/gw?ssl=require&pool_size=4&max_overflow=0"
                                       "&pgbouncer=true")
    assert settings.sqlalchemy_read_url == "postgresql+asyncpg://u@replica:6432/gw?pool_size=4&max_overflow=0&pgbouncer=true"
    options = connect_options(settings.sqlalchemy_url)
    assert options.url.render_as_string(hide_password=False) == "postgresql+asyncpg://u@db:6432/gw?ssl=require"
    assert (options.pool_size, options.max_overflow) == (4, 0)
    assert options.driver_args["statement_cache_size"] == 0
    assert options.driver_args["prepared_statement_cache_size"] == 0
    name = options.driver_args["prepared_statement_name_func"]
    assert callable(name) and name() == ""  # PostgreSQL's unnamed statement
    engine = db.make_engine(settings.sqlalchemy_url)
    assert (engine.pool.size(), engine.pool._max_overflow) == (4, 0)  # type: ignore[attr-defined]
    assert engine.url.query == {"ssl": "require"}

    # The defaults add nothing; a URL may carry the options itself (and its own win).
    plain = Settings(database_url="postgresql://u@db/gw")
    assert plain.sqlalchemy_url == "postgresql+asyncpg://u@db/gw"
    defaults = connect_options(plain.sqlalchemy_url)
    assert (defaults.pool_size, defaults.max_overflow, defaults.driver_args) == (
        plain.database_pool_size, plain.database_max_overflow, {})
    assert connect_options("postgresql+asyncpg://u@db/gw?pgbouncer=false").driver_args == {}
    assert Settings(database_url="postgresql://u@db/gw?pgbouncer=false&pool_size=3", database_pgbouncer=True,
                    database_pool_size=5).sqlalchemy_url == "postgresql+asyncpg://u@db/gw?pgbouncer=false&pool_size=3"
    with pytest.raises(ValueError, match="at least 1"):
        connect_options("postgresql+asyncpg://u@db/gw?pool_size=0")
    assert Settings(database_url="sqlite:///x.db", database_pgbouncer=True).sqlalchemy_url == "sqlite+aiosqlite:///x.db"
