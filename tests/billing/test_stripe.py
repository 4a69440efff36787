"""Stripe meter sync through the official SDK against the local Stripe-compatible test server."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.ledger import billing_queries
from billing.ledger.ledger_tables import MeterEventRow, UsageRow
from billing.ledger.writer import LedgerWriter
from billing.stripe.reconcile import reconcile
from billing.stripe.sync import MeterSync, connect
from tests.billing.conftest import make_record
from tests.billing.stripe_fixtures import NAMES, stripe_server

KEY = "sk_test_gateway"


@pytest.fixture
async def sessions(ledger_engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    made = async_sessionmaker(ledger_engine, expire_on_commit=False)
    yield made
    async with made() as s, s.begin():  # other tests share the database: leave no mapping behind
        await s.execute(delete(MeterEventRow))
        await s.execute(delete(billing_queries.StripeCustomer))


async def _seed(sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, n: int,
                hours_ago: float = 2.0) -> tuple[str, str, list[int]]:
    org = "org_" + secrets.token_hex(4)
    customer = "cus_" + secrets.token_hex(6)
    async with sessions() as s:
        await billing_queries.set_customer(s, org, customer)
    start_ms = int((time.time() - hours_ago * 3600) * 1000)
    records = [make_record(org, i, started_at_ms=start_ms + i * 60_000, reasoning_tokens=i % 3) for i in range(n)]
    free = make_record(org, n, started_at_ms=start_ms, billed_ticks=0, plan="free")  # metered, not billed
    await LedgerWriter(engine).write([*records, free])
    uncached = sum(r.prompt_tokens - r.cached_tokens for r in records)
    return org, customer, [uncached, sum(r.cached_tokens for r in records), sum(r.output_tokens for r in records)]


async def test_sync_twice_sends_nothing_new_and_reconciles(sessions: async_sessionmaker[AsyncSession],
                                                           ledger_engine: AsyncEngine) -> None:
    org, customer, expected = await _seed(sessions, ledger_engine, 90)
    async with stripe_server() as stripe:
        conn = connect(KEY, stripe.url)
        try:
            sync = MeterSync(sessions, conn.client, NAMES, settle_delay_s=0, max_calls_per_s=200)
            first = await sync.run()
            assert first.sent == first.events_created > 0 and first.failed == 0 and first.pending == 0
            seen = stripe.server.state.requests_seen
            second = await sync.run()
            assert (second.rows_claimed, second.events_created, second.sent) == (0, 0, 0)
            assert stripe.server.state.requests_seen == seen  # not a single call
            events = list(stripe.server.state.events.values())
            assert {e.customer for e in events} == {customer}
            totals = [sum(e.value for e in events if e.event_name == NAMES.of(m)) for m in ("input", "cached",
                                                                                             "output")]
            assert totals == expected
            rows = await reconcile(sessions, conn.client, NAMES)
            assert rows and all(r.matches for r in rows)
            assert sum(r.ledger for r in rows if r.meter == "output") == expected[2]
        finally:
            await conn.aclose()
    del org


async def test_faults_are_retried_and_reconciliation_matches(sessions: async_sessionmaker[AsyncSession],
                                                             ledger_engine: AsyncEngine) -> None:
    _, _, expected = await _seed(sessions, ledger_engine, 40, hours_ago=30)  # spans two days' windows
    async with stripe_server() as stripe:
        conn = connect(KEY, stripe.url)
        try:
            faults = stripe.server.state.faults
            faults.fail_5xx, faults.fail_429, faults.lose_response = 2, 2, 1
            sync = MeterSync(sessions, conn.client, NAMES, settle_delay_s=0, max_calls_per_s=200, backoff_s=0.01,
                             max_attempts=8)
            report = await sync.run()
            assert report.failed == 0 and report.pending == 0
            assert report.retried >= 5 and report.duplicates == 1  # the lost response came back as a duplicate
            rows = await reconcile(sessions, conn.client, NAMES)
            assert all(r.matches for r in rows), rows
            assert [sum(r.stripe for r in rows if r.meter == m) for m in ("input", "cached", "output")] == expected
        finally:
            await conn.aclose()


async def test_an_event_that_keeps_failing_stays_pending_and_is_resent_unchanged(
        sessions: async_sessionmaker[AsyncSession], ledger_engine: AsyncEngine) -> None:
    await _seed(sessions, ledger_engine, 10)
    async with stripe_server() as stripe:
        conn = connect(KEY, stripe.url)
        try:
            stripe.server.state.faults.fail_5xx = 1000
            sync = MeterSync(sessions, conn.client, NAMES, settle_delay_s=0, max_calls_per_s=500, max_attempts=2,
                             backoff_s=0.001)
            report = await sync.run()
            assert report.sent == 0 and report.pending == report.events_created > 0
            async with sessions() as s:
                before = set((await s.execute(select(MeterEventRow.identifier, MeterEventRow.value))).all())
            stripe.server.state.faults.fail_5xx = 0
            rows = await reconcile(sessions, conn.client, NAMES)
            assert rows and not any(r.matches for r in rows)
            assert all(r.sent == r.stripe == 0 < r.ledger for r in rows)
            again = await sync.run()
            assert again.events_created == 0 and again.sent == report.events_created and again.pending == 0
            assert {(e.identifier, e.value) for e in stripe.server.state.events.values()} == before
            assert all(r.matches for r in await reconcile(sessions, conn.client, NAMES))
        finally:
            await conn.aclose()


async def test_rows_of_unmapped_orgs_and_recent_rows_wait(sessions: async_sessionmaker[AsyncSession],
                                                          ledger_engine: AsyncEngine) -> None:
    await _seed(sessions, ledger_engine, 3, hours_ago=0)
    unmapped = make_record("org_" + secrets.token_hex(4), 0, started_at_ms=int(time.time() * 1000) - 7_200_000)
    await LedgerWriter(ledger_engine).write([unmapped])
    async with stripe_server() as stripe:
        conn = connect(KEY, stripe.url)
        try:
            sync = MeterSync(sessions, conn.client, NAMES, settle_delay_s=600)
            assert (await sync.run()).rows_claimed == 0  # the mapped org's rows are younger than the delay
            later = MeterSync(sessions, conn.client, NAMES, settle_delay_s=600,
                              clock=lambda: datetime.now(UTC) + timedelta(hours=1), max_calls_per_s=200)
            assert (await later.run()).rows_claimed == 4
            async with sessions() as s:
                left = (await s.execute(select(func.count()).select_from(UsageRow)
                                        .where(UsageRow.request_id == unmapped.request_id,
                                               UsageRow.stripe_batch.is_(None)))).scalar_one()
            assert left == 1
        finally:
            await conn.aclose()


async def test_test_server_validates_like_stripe() -> None:
    frozen = [100.0]
    async with stripe_server(rate_limit_per_s=3, clock=lambda: frozen[0]) as stripe:
        headers = {"Authorization": f"Bearer {KEY}"}
        now = int(time.time())

        def form(identifier: str, **extra: str) -> dict[str, str]:
            return {"event_name": NAMES.input, "payload[stripe_customer_id]": "cus_1", "payload[value]": "5",
                    "identifier": identifier, "timestamp": str(now), **extra}

        async with aiohttp.ClientSession() as http:
            url = stripe.url + "/v1/billing/meter_events"
            async with http.post(url, data=form("a")) as r:
                assert r.status == 401
            async with http.post(url, data=form("a"), headers=headers) as r:
                assert r.status == 200
            async with http.post(url, data=form("a"), headers=headers) as r:
                body = await r.json()
                assert r.status == 400 and r.headers["stripe-should-retry"] == "false"
                assert body["error"]["type"] == "invalid_request_error" and "already exists" in body["error"]["message"]
            frozen[0] += 1
            async with http.post(url, data=form("b", timestamp=str(now - 36 * 86_400)), headers=headers) as r:
                assert r.status == 400 and (await r.json())["error"]["param"] == "timestamp"
            async with http.post(url, data=form("c", **{"payload[value]": "1.5"}), headers=headers) as r:
                assert r.status == 400
            async with http.post(url, data=form("d"), headers=headers) as r:
                assert r.status == 200
            async with http.post(url, data=form("e"), headers=headers) as r:
                assert r.status == 429  # a fourth call within the same (frozen) second
            frozen[0] += 1.5
            async with http.post(url, data=form("e"), headers=headers) as r:
                assert r.status == 200
