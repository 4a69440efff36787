"""The ledger loop never dies: a terminated database connection, a record the ledger cannot hold, and
Redis losing the stream and its group each leave it writing, with nothing lost or counted twice."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.consumer import FIELD, StreamConsumer
from billing.ledger.dead_letters import DeadLetters
from billing.ledger.ledger_tables import UsageRow
from billing.ledger.sink import LedgerSink
from billing.ledger.writer import LedgerWriter
from billing.usage_record import UsageRecord
from gateway.metering.consume import LedgerStats, consume
from gateway.metering.spool import Spool
from tests.billing.conftest import make_record


@pytest.fixture
async def stream(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    key = f"gwtest-loop-{secrets.token_hex(4)}:{{usage}}"
    yield key
    await redis_client.delete(key, key + ":epoch")


async def _rows(engine: AsyncEngine, org: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(UsageRow)
                                       .where(UsageRow.org_id == org))).scalar_one())


async def _until(engine: AsyncEngine, org: str, expected: int) -> int:
    found = 0
    for _ in range(300):
        found = await _rows(engine, org)
        if found >= expected:
            break
        await asyncio.sleep(0.05)
    return found


def _consumer(redis: aioredis.Redis, stream: str, engine: AsyncEngine) -> StreamConsumer:
    sink = LedgerSink(LedgerWriter(engine), DeadLetters(engine))
    return StreamConsumer(redis, stream, sink, epoch_key=stream + ":epoch", consumer="c", block_ms=20,
                          claim_idle_ms=200)


async def _add(redis: aioredis.Redis, stream: str, records: list[UsageRecord], spool: Spool | None = None) -> None:
    for r in records:
        raw = r.encode()
        if spool is not None:
            spool.add(raw)
        await redis.xadd(stream, {FIELD: raw})


async def test_the_loop_survives_terminated_connections_and_a_poison_record(
        ledger_engine: AsyncEngine, redis_client: aioredis.Redis, stream: str, pg_database: str) -> None:
    org = "org_" + secrets.token_hex(4)
    stats, stop = LedgerStats(), asyncio.Event()
    task = asyncio.create_task(consume(_consumer(redis_client, stream, ledger_engine), stats, stop, 0.02))
    try:
        await _add(redis_client, stream, [make_record(org, i) for i in range(5)])
        assert await _until(ledger_engine, org, 5) == 5
        # A refused request's long model name and usage beyond int64: dead letters, the rest goes on.
        await _add(redis_client, stream, [make_record(org, 5, model="m" * 300), make_record(org, 6),
                                          make_record(org, 7, billed_ticks=1 << 64), make_record(org, 8)])
        assert await _until(ledger_engine, org, 7) == 7
        if ledger_engine.dialect.name == "postgresql":  # an admin terminates the writer's backends
            conn = await asyncpg.connect(pg_database.replace("postgresql+asyncpg", "postgresql"))
            try:
                killed = await conn.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            finally:
                await conn.close()
            assert killed >= 1
        await _add(redis_client, stream, [make_record(org, i) for i in range(9, 20)])
        assert await _until(ledger_engine, org, 18) == 18
        assert not task.done() and stats.dead_letters == 2
        await asyncio.sleep(0.1)
        assert await _rows(ledger_engine, org) == 18
    finally:
        stop.set()
        await task


async def test_after_redis_loses_the_stream_the_group_comes_back_and_the_spool_is_replayed(
        ledger_engine: AsyncEngine, redis_client: aioredis.Redis, stream: str) -> None:
    org = "org_" + secrets.token_hex(4)
    stats, stop, spool = LedgerStats(), asyncio.Event(), Spool(300.0, 1000)
    consumer = _consumer(redis_client, stream, ledger_engine)
    task = asyncio.create_task(consume(consumer, stats, stop, 0.02, spool, redis_client))
    try:
        await _add(redis_client, stream, [make_record(org, i) for i in range(5)], spool)
        assert await _until(ledger_engine, org, 5) == 5
        stop.set()
        await task
        # Appended while no writer read them, then Redis restarts empty: stream, group and epoch are gone.
        await _add(redis_client, stream, [make_record(org, i) for i in range(5, 10)], spool)
        await redis_client.delete(stream, stream + ":epoch")
        stop = asyncio.Event()
        task = asyncio.create_task(consume(consumer, stats, stop, 0.02, spool, redis_client))
        await _add(redis_client, stream, [make_record(org, i) for i in range(10, 12)], spool)
        assert await _until(ledger_engine, org, 12) == 12
        await asyncio.sleep(0.2)
        assert await _rows(ledger_engine, org) == 12  # the replayed ones already written count once
        assert stats.spool_replays == 1 and not task.done()
    finally:
        stop.set()
        await task


async def test_a_batch_whose_write_failed_is_retried_at_once_not_after_the_claim_delay(
        redis_client: aioredis.Redis, stream: str) -> None:
    """The entries of a failed batch stay pending on this consumer: it reads them again on its next step
    (they used to wait claim_idle_ms, 30 s, to be claimed as a dead writer's)."""
    from gateway.db import engine as db
    from tests.private_postgres import private_postgres

    org = "org_" + secrets.token_hex(4)
    async with private_postgres() as pg:
        url = pg.url.replace("postgresql://", "postgresql+asyncpg://")
        await db.upgrade(url)
        engine = db.make_engine(url)
        try:
            sink = LedgerSink(LedgerWriter(engine), DeadLetters(engine))
            consumer = StreamConsumer(redis_client, stream, sink, epoch_key=stream + ":epoch", consumer="c",
                                      block_ms=20, claim_idle_ms=60_000)
            await _add(redis_client, stream, [make_record(org, i) for i in range(4)])
            await asyncio.to_thread(pg.stop)
            with pytest.raises(OSError):
                await consumer.step()
            await asyncio.to_thread(pg.start)
            assert (await consumer.step()).inserted == 4
            assert await _rows(engine, org) == 4 and await consumer.backlog() == 0
        finally:
            await engine.dispose()
