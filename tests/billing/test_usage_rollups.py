"""The hourly rollups the usage API reads: errors, refused (rate-limited) requests, decode time and the
per-end-user table, written by the ledger writer on both databases; the 0004 migration adds them,
backfills the end users from the ledger, and goes back."""

from __future__ import annotations

import asyncio
import random
import secrets
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import DateTime, column, func, insert, inspect, select, table
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.billing_queries import aware
from billing.ledger.ledger_tables import UsageHourly, UsageHourlyEndUser, UsageRow
from billing.ledger.writer import LedgerWriter, _sqlite_stamps, _sqlite_time, rollup
from gateway.config import Settings
from gateway.db import engine as db
from tests.billing.conftest import make_record
from tests.conftest import scratch_database

HOUR = 3_600_000
BASE = 1_764_000_000_000 // HOUR * HOUR


def _refused(org: str, n: int, **overrides: object) -> object:
    values: dict[str, object] = dict(prompt_tokens=0, cached_tokens=0, output_tokens=0, list_ticks=0, billed_ticks=0,
                                     status="rate_limited", http_status=429, reported=False, kind="refused",
                                     started_at_ms=BASE + n)
    values.update(overrides)
    return make_record(org, 1000 + n, **values)


async def _end_users(engine: AsyncEngine, org: str) -> list[tuple[object, ...]]:
    t = UsageHourlyEndUser
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(t.end_user, t.requests, t.errors, t.rate_limited, t.decode_ms, t.decode_tokens, t.billed_ticks)
            .where(t.org_id == org).order_by(t.end_user))
        return [tuple(r) for r in rows.all()]


async def _hourly(engine: AsyncEngine, org: str) -> list[tuple[object, ...]]:
    t = UsageHourly
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(t.requests, t.errors, t.rate_limited, t.decode_ms, t.decode_tokens, t.billed_ticks)
            .where(t.org_id == org))
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
    assert await _hourly(ledger_engine, org) == [(4, 1, 3, 20 + 200 + 300, 10 + 50 + 30,
                                                  billed + anonymous.billed_ticks)]
    assert await _end_users(ledger_engine, org) == [
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
    assert (await _end_users(ledger_engine, org))[1][1] == 3
    assert (await _hourly(ledger_engine, org))[0][0] == 4


def test_rollup_in_python_matches_the_sql_rules() -> None:
    org = "org_py"
    groups = rollup([make_record(org, 0, started_at_ms=BASE, end_user="bob", stream=True, ttfb_ms=5, duration_ms=105),
                     _refused(org, 1, end_user="bob"),  # type: ignore[list-item]
                     make_record(org, 2, started_at_ms=BASE + HOUR, status="client_disconnected")], by_end_user=True)
    by_user = {(g["hour"], g["end_user"]): g for g in groups}
    bob = by_user[(datetime.fromtimestamp(BASE / 1000, UTC), "bob")]
    assert (bob["requests"], bob["rate_limited"], bob["decode_ms"], bob["decode_tokens"], bob["errors"]) == \
        (1, 1, 100, 10, 0)
    late = by_user[(datetime.fromtimestamp((BASE + HOUR) / 1000, UTC), "")]
    assert (late["requests"], late["errors"], late["decode_ms"]) == (1, 1, 0)
    assert {g["end_user"] for g in rollup([make_record(org, 0, end_user="bob")])} == {""}  # not by end user


async def _migration_roundtrip(url: str) -> None:
    await db.upgrade(url, "0003")
    engine = db.make_engine(url)
    moment = datetime(2026, 11, 1, 5, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            # Through typed tables, so that SQLite stores times as SQLAlchemy (and the writer) do.
            hourly_v3 = table("usage_hourly", column("hour", DateTime(timezone=True)),
                              *(column(c) for c in ("org_id", "key_id", "model", "requests", "prompt_tokens",
                                                    "cached_tokens", "output_tokens", "reasoning_tokens",
                                                    "list_ticks", "billed_ticks", "counted_requests")))
            await conn.execute(insert(hourly_v3).values(
                hour=moment, org_id="org_m", key_id="key_m", model="m", requests=3, prompt_tokens=30,
                cached_tokens=10, output_tokens=9, reasoning_tokens=0, list_ticks=700, billed_ticks=600,
                counted_requests=1))
            record = asdict(make_record("org_m", 0, key_id="key_m", model="m", end_user="eve", stream=True,
                                        ttfb_ms=10, duration_ms=110))
            del record["kind"], record["app"], record["provider_cost_ticks"]  # fields of later migrations
            record["started_at"] = moment + timedelta(seconds=record.pop("started_at_ms") % 60)
            ledger = table("usage_ledger", column("started_at", DateTime(timezone=True)),
                           *(column(c) for c in record if c != "started_at"))
            await conn.execute(insert(ledger).values(**record))
        await db.upgrade(url, "head")
        async with engine.connect() as conn:
            row = (await conn.execute(select(UsageHourly.requests, UsageHourly.billed_ticks, UsageHourly.errors,
                                             UsageHourly.rate_limited))).one()
            backfilled = (await conn.execute(select(
                UsageHourlyEndUser.hour, UsageHourlyEndUser.end_user, UsageHourlyEndUser.requests,
                UsageHourlyEndUser.billed_ticks, UsageHourlyEndUser.decode_ms, UsageHourlyEndUser.decode_tokens))).one()
        assert tuple(row) == (3, 600, 0, 0)
        assert (aware(backfilled[0]), *backfilled[1:]) == (moment, "eve", 1, record["billed_ticks"], 100, 10)
        await asyncio.to_thread(command.downgrade, db.alembic_config(url), "0003")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            columns = await conn.run_sync(lambda sync: {c["name"] for c in inspect(sync).get_columns("usage_hourly")})
        assert "usage_hourly_end_users" not in tables and "errors" not in columns and "requests" in columns
    finally:
        await engine.dispose()


async def test_migration_adds_rollups_and_back_on_sqlite(tmp_path: Path) -> None:
    await _migration_roundtrip(Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}").sqlalchemy_url)


async def test_migration_adds_rollups_and_back_on_postgresql() -> None:
    async with scratch_database("gw_test_mig_") as url:
        await _migration_roundtrip(Settings(database_url=url).sqlalchemy_url)


def test_the_sqlite_time_text_of_a_record_is_the_text_sqlalchemy_stores() -> None:
    rng = random.Random(7)
    moments = [0, 999, 1000, BASE - 1, BASE, BASE + 1, 4_102_444_800_000 - 1,  # through 2099-12-31 23:59:59.999
               *(rng.randrange(0, 4_102_444_800_000) for _ in range(3000)),
               *(BASE + rng.randrange(0, 3000) for _ in range(2000))]  # many in one second, as in a batch
    stamps = _sqlite_stamps([make_record("org_t", 0, started_at_ms=ms) for ms in moments])
    assert stamps == [_sqlite_time(datetime.fromtimestamp(ms / 1000, UTC)) for ms in moments]
    assert _sqlite_stamps([make_record("org_t", 0, started_at_ms=253_402_300_799_000)]) == \
        ["9999-12-31 23:59:59.000000"]
    with pytest.raises(ValueError):  # the year 10000: the general way, which refuses it as before
        _sqlite_stamps([make_record("org_t", 0, started_at_ms=253_402_300_800_000)])
