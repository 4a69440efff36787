"""The usage ledger partitioned by month on PostgreSQL: the migration (existing rows kept, and back), months
created ahead by the writers and the CLI, rows of a month without a partition moved into it when it is
created, exactly-once across partitions, and the retention that drops a month only once its rollups are in
place. Each test has a PostgreSQL database of its own (partitions are schema-wide)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.partitions import LedgerPartitions, add_months, month_start
from billing.ledger.writer import LedgerWriter
from gateway.config import Settings
from gateway.db import engine as db
from gateway.metering.consume import LedgerStats
from gateway.metering.writer_process import run_writer
from tests.billing.conftest import make_record
from tests.conftest import REDIS_URL, scratch_database

NOW = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
NOV_2025_MS = 1_764_000_000_000  # 2025-11-24 (make_record's default start)
OCT_2025_MS = int(datetime(2025, 10, 10, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (plain postgresql:// URL)."""
    async with scratch_database("gw_part_") as url:
        yield url


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    url = Settings(database_url=pg_url).sqlalchemy_url
    await db.upgrade(url)
    engine = db.make_engine(url)
    yield engine
    await engine.dispose()


async def _scalar(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def _partition_rows(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT tableoid::regclass::text, count(*) FROM usage_ledger GROUP BY 1"))
        return {name: int(n) for name, n in rows}


async def test_the_migration_partitions_the_ledger_by_month(engine: AsyncEngine) -> None:
    partitions = LedgerPartitions(engine)
    assert await partitions.partitioned()
    assert month_start(datetime.now(UTC)) in await partitions.months()
    async with engine.connect() as conn:
        key = (await conn.execute(text(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'usage_ledger'::regclass AND i.indisprimary"))).scalar_one()
    assert key == ["request_id", "started_at"]


async def test_ensure_creates_months_ahead_and_moves_rows_waiting_in_the_default(engine: AsyncEngine) -> None:
    writer, partitions = LedgerWriter(engine), LedgerPartitions(engine)
    records = [make_record("org_a", i) for i in range(30)]  # November 2025: no partition yet
    assert await writer.write(records) == 30
    assert await _partition_rows(engine) == {"usage_ledger_default": 30}
    created = await partitions.ensure(NOW, months_ahead=2)
    assert created == ["usage_ledger_2025_11", "usage_ledger_2027_01", "usage_ledger_2027_02"]
    assert await _partition_rows(engine) == {"usage_ledger_2025_11": 30}
    assert {add_months(month_start(NOW), n) for n in range(3)} <= set(await partitions.months())
    # Idempotent, and safe to run from several writers at once.
    assert await asyncio.gather(*(partitions.ensure(NOW, months_ahead=3) for _ in range(4))) in (
        [["usage_ledger_2027_03"], [], [], []], [[], ["usage_ledger_2027_03"], [], []],
        [[], [], ["usage_ledger_2027_03"], []], [[], [], [], ["usage_ledger_2027_03"]])


async def test_exactly_once_holds_across_a_partition_move(engine: AsyncEngine) -> None:
    """A record replayed after its row moved from the default partition into its month's is still a repeat."""
    writer, partitions = LedgerWriter(engine), LedgerPartitions(engine)
    records = [make_record("org_b", i) for i in range(20)]
    assert await writer.write(records[:10]) == 10
    await partitions.ensure(NOW, months_ahead=0)
    assert await writer.write(records) == 10  # the first ten are repeats, in the new partition now
    assert await writer.write(records) == 0
    assert await _scalar(engine, "SELECT count(*) FROM usage_ledger") == 20
    assert await _scalar(engine, "SELECT sum(requests) FROM usage_hourly") == 20


async def test_retention_drops_an_old_month_only_once_its_rollups_exist(engine: AsyncEngine) -> None:
    writer, partitions = LedgerWriter(engine), LedgerPartitions(engine)
    november = [make_record("org_c", i) for i in range(25)]
    await writer.write(november)  # rows and their hourly rollups, in one transaction
    october = [make_record("org_c", 100 + i, started_at_ms=OCT_2025_MS + i * 1000) for i in range(5)]
    await writer.write(october)
    recent = [make_record("org_c", 200 + i, started_at_ms=int(NOW.timestamp() * 1000) - i * 1000) for i in range(3)]
    await writer.write(recent)
    await partitions.ensure(NOW, months_ahead=0)
    # October's rollups are gone (say, a rollup table restored from an older backup): its rows must stay.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM usage_hourly WHERE hour < '2025-11-01T00:00:00+00:00'"))

    report = await partitions.prune(NOW, retention_months=12)
    assert report.dropped == ["usage_ledger_2025_11"]
    assert [name for name, _ in report.kept] == ["usage_ledger_2025_10"]
    assert "rollups do not match" in report.kept[0][1]
    assert await _partition_rows(engine) == {"usage_ledger_2025_10": 5, "usage_ledger_2026_12": 3}
    # What the usage API reads stays: November's rollups.
    assert await _scalar(engine, "SELECT sum(requests) FROM usage_hourly WHERE hour < '2025-12-01'") == 25
    # Inside the retention nothing is touched, whatever the rollups say.
    assert (await partitions.prune(NOW, retention_months=14)).dropped == []
    assert (await partitions.prune(NOW, retention_months=0)).dropped == []


async def test_retention_keeps_a_month_not_yet_sent_to_stripe(engine: AsyncEngine) -> None:
    writer, partitions = LedgerWriter(engine), LedgerPartitions(engine)
    await writer.write([make_record("org_d", i) for i in range(4)])
    await partitions.ensure(NOW, months_ahead=0)
    report = await partitions.prune(NOW, retention_months=3, require_synced=True)
    assert report.dropped == [] and "not yet sent to Stripe" in report.kept[0][1]
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE usage_ledger SET stripe_batch = 1"))
    assert (await partitions.prune(NOW, retention_months=3, require_synced=True)).dropped == ["usage_ledger_2025_11"]


async def test_the_standalone_writer_creates_partitions_ahead(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, redis_url=REDIS_URL, redis_prefix="gwtest-part-" + secrets.token_hex(4),
                        ledger_partitions_ahead=3)
    stop = asyncio.Event()
    task = asyncio.create_task(run_writer(settings, 1, stop, LedgerStats()))
    engine = db.make_engine(settings.sqlalchemy_url)
    try:
        wanted = {add_months(month_start(datetime.now(UTC)), n) for n in range(4)}
        for _ in range(100):
            if wanted <= set(await LedgerPartitions(engine).months()):
                break
            await asyncio.sleep(0.1)
        assert wanted <= set(await LedgerPartitions(engine).months())
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await engine.dispose()


def test_the_cli_ensures_lists_and_prunes(pg_url: str, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}, "GATEWAY_DATABASE_URL": pg_url,
           "XDG_DATA_HOME": str(tmp_path)}

    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "db", "partitions", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    ensured = gateway("ensure", "--months-ahead", "4")
    assert ensured.returncode == 0, ensured.stderr
    assert "4 partitions created" in ensured.stdout
    this = month_start(datetime.now(UTC))
    listed = gateway("list").stdout
    assert all(f"usage_ledger_{add_months(this, n):%Y_%m}" in listed for n in range(5)), listed
    pruned = gateway("prune", "--retention-months", "1")
    assert pruned.returncode == 0 and "0 partitions dropped" in pruned.stdout, pruned.stdout + pruned.stderr


def test_sqlite_keeps_a_plain_table(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}, "XDG_DATA_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "db", "partitions", "ensure"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "not partitioned on this database" in done.stdout, done.stdout + done.stderr


async def test_the_migration_keeps_existing_rows_both_ways(pg_url: str) -> None:
    url = Settings(database_url=pg_url).sqlalchemy_url
    await db.upgrade(url, "0005")
    engine = db.make_engine(url)
    try:
        async with engine.begin() as conn:
            for i, ms in enumerate((NOV_2025_MS, OCT_2025_MS, NOV_2025_MS + 1000)):
                r = make_record("org_m", i, started_at_ms=ms)
                await conn.execute(text(
                    "INSERT INTO usage_ledger (request_id, org_id, key_id, model, requested_model, worker, "
                    "prompt_tokens, cached_tokens, output_tokens, reasoning_tokens, list_ticks, billed_ticks, plan, "
                    "started_at, ttfb_ms, duration_ms, status, http_status, reported, stream) VALUES (:id, 'org_m', "
                    "'k', 'm', 'm', 'w', 1, 0, 1, 0, 5, 5, 'list', :at, 1, 2, 'ok', 200, true, false)"),
                    {"id": r.request_id, "at": datetime.fromtimestamp(ms / 1000, UTC)})
        await db.upgrade(url, "head")
        assert await _partition_rows(engine) == {"usage_ledger_2025_10": 1, "usage_ledger_2025_11": 2}
        assert {"usage_ledger_2025_10", "usage_ledger_2025_11", "usage_ledger_2025_12"} <= {
            f"usage_ledger_{m:%Y_%m}" for m in await LedgerPartitions(engine).months()}
        await asyncio.to_thread(command.downgrade, db.alembic_config(url), "0005")
        assert not await LedgerPartitions(engine).partitioned()
        assert await _scalar(engine, "SELECT count(*) FROM usage_ledger") == 3
    finally:
        await engine.dispose()
