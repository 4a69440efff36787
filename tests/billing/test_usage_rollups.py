"""The hourly rollups the usage API reads: end users, errors, refused (rate-limited) requests and decode
time, written by the ledger writer on both databases; the 0004 migration keeps the rows it rebuilds."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from alembic import command
from sqlalchemy import DateTime, column, func, insert, select, table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.models import UsageHourly, UsageRow
from billing.ledger.writer import LedgerWriter, rollup
from gateway.config import Settings
from gateway.db import engine as db
from tests.billing.conftest import make_record
from tests.conftest import PG_ADMIN_DSN

HOUR = 3_600_000
BASE = 1_764_000_000_000 // HOUR * HOUR


def _refused(org: str, n: int, **overrides: object) -> object:
    values: dict[str, object] = dict(prompt_tokens=0, cached_tokens=0, output_tokens=0, list_ticks=0, billed_ticks=0,
                                     status="rate_limited", http_status=429, reported=False, kind="refused",
                                     started_at_ms=BASE + n)
    values.update(overrides)
    return make_record(org, 1000 + n, **values)


async def _hourly(engine: AsyncEngine, org: str) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(UsageHourly.end_user, UsageHourly.requests, UsageHourly.errors, UsageHourly.rate_limited,
                   UsageHourly.decode_ms, UsageHourly.decode_tokens, UsageHourly.billed_ticks)
            .where(UsageHourly.org_id == org).order_by(UsageHourly.end_user))
        return [tuple(r) for r in rows.all()]


async def test_rollups_by_end_user_with_errors_refusals_and_decode_time(ledger_engine: AsyncEngine) -> None:
    org = "org_" + secrets.token_hex(4)
    ok_stream = make_record(org, 0, started_at_ms=BASE, end_user="alice", stream=True, ttfb_ms=40, duration_ms=240,
                            output_tokens=50)
    ok_whole = make_record(org, 1, started_at_ms=BASE + 1, end_user="alice", ttfb_ms=300, duration_ms=300,
                           output_tokens=30)
    cut = make_record(org, 2, started_at_ms=BASE + 2, end_user="alice", status="upstream_cut", stream=True,
                      ttfb_ms=10, duration_ms=500)
    anonymous = make_record(org, 3, started_at_ms=BASE + 3)
    refused = [_refused(org, 4, end_user="alice"), _refused(org, 5, end_user="alice"), _refused(org, 6)]
    writer = LedgerWriter(ledger_engine)
    assert await writer.write([ok_stream, ok_whole, cut, anonymous, *refused]) == 4  # type: ignore[list-item]
    billed = ok_stream.billed_ticks + ok_whole.billed_ticks + cut.billed_ticks
    assert await _hourly(ledger_engine, org) == [
        ("", 1, 0, 1, 20, 10, anonymous.billed_ticks),
        # decode time: the stream after its first byte (200 ms), the whole answer all of it (300 ms);
        # the cut stream is an error and not counted in the throughput.
        ("alice", 3, 1, 2, 200 + 300, 50 + 30, billed),
    ]
    async with ledger_engine.connect() as conn:
        ledger = (await conn.execute(select(func.count()).select_from(UsageRow)
                                     .where(UsageRow.org_id == org))).scalar_one()
    assert ledger == 4  # refused requests never become ledger rows (nothing to bill)
    # A replayed batch adds no ledger row and no request; refusals carry no id in the ledger and are
    # counted again (at least once, documented).
    assert await writer.write([ok_stream, ok_whole]) == 0
    assert (await _hourly(ledger_engine, org))[1][1] == 3


def test_rollup_in_python_matches_the_sql_rules() -> None:
    org = "org_py"
    groups = rollup([make_record(org, 0, started_at_ms=BASE, end_user="bob", stream=True, ttfb_ms=5, duration_ms=105),
                     _refused(org, 1, end_user="bob"),  # type: ignore[list-item]
                     make_record(org, 2, started_at_ms=BASE + HOUR, status="client_disconnected")])
    by_user = {(g["hour"], g["end_user"]): g for g in groups}
    bob = by_user[(datetime.fromtimestamp(BASE / 1000, UTC), "bob")]
    assert (bob["requests"], bob["rate_limited"], bob["decode_ms"], bob["decode_tokens"], bob["errors"]) == \
        (1, 1, 100, 10, 0)
    late = by_user[(datetime.fromtimestamp((BASE + HOUR) / 1000, UTC), "")]
    assert (late["requests"], late["errors"], late["decode_ms"]) == (1, 1, 0)


async def _migration_roundtrip(url: str) -> None:
    await db.upgrade(url, "0003")
    engine = db.make_engine(url)
    try:
        async with engine.begin() as conn:
            # Through a typed table, so that SQLite stores the hour as SQLAlchemy (and the writer) do.
            hourly_v3 = table("usage_hourly", column("hour", DateTime(timezone=True)),
                              *(column(c) for c in ("org_id", "key_id", "model", "requests", "prompt_tokens",
                                                    "cached_tokens", "output_tokens", "reasoning_tokens",
                                                    "list_ticks", "billed_ticks", "counted_requests")))
            await conn.execute(insert(hourly_v3).values(
                hour=datetime(2026, 11, 1, 5, tzinfo=UTC), org_id="org_m", key_id="key_m", model="m", requests=3,
                prompt_tokens=30, cached_tokens=10, output_tokens=9, reasoning_tokens=0, list_ticks=700,
                billed_ticks=600, counted_requests=1))
        await db.upgrade(url, "head")
        async with engine.connect() as conn:
            row = (await conn.execute(select(UsageHourly.end_user, UsageHourly.requests, UsageHourly.billed_ticks,
                                             UsageHourly.errors, UsageHourly.rate_limited))).one()
        assert tuple(row) == ("", 3, 600, 0, 0)
        await LedgerWriter(engine).write([make_record("org_m", 0, key_id="key_m", model="m", end_user="eve",
                                                      started_at_ms=int(datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
                                                                        .timestamp() * 1000))])
        await asyncio.to_thread(command.downgrade, db.alembic_config(url), "0003")
        async with engine.connect() as conn:
            requests = (await conn.execute(text("SELECT requests FROM usage_hourly"))).scalar_one()
        assert requests == 4  # the end users' rows summed back into one
    finally:
        await engine.dispose()


async def test_migration_rebuilds_rollups_and_back_on_sqlite(tmp_path: Path) -> None:
    await _migration_roundtrip(Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}").sqlalchemy_url)


async def test_migration_rebuilds_rollups_and_back_on_postgresql() -> None:
    name = "gw_test_mig_" + secrets.token_hex(4)
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        await _migration_roundtrip(Settings(database_url=PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name).sqlalchemy_url)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
