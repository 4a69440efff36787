"""The ledger is exactly-once: replays, retries and a writer killed between insert and acknowledge."""

from __future__ import annotations

import secrets
from collections import deque

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.consumer import FIELD, GROUP, QueueConsumer, StreamConsumer
from billing.ledger.models import UsageHourly, UsageRow
from billing.ledger.writer import LedgerWriter
from tests.billing.conftest import make_record


async def _ledger_totals(engine: AsyncEngine, org: str) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(func.count(), func.coalesce(func.sum(UsageRow.billed_ticks), 0))
                                   .where(UsageRow.org_id == org))).one()
        hourly = (await conn.execute(select(func.coalesce(func.sum(UsageHourly.requests), 0))
                                     .where(UsageHourly.org_id == org))).scalar_one()
    return int(rows[0]), int(rows[1]), int(hourly)


async def test_replayed_batches_insert_and_roll_up_once(ledger_engine: AsyncEngine) -> None:
    org = "org_" + secrets.token_hex(4)
    writer = LedgerWriter(ledger_engine)
    records = [make_record(org, i) for i in range(50)]
    assert await writer.write(records) == 50
    assert await writer.write([*records[10:30], make_record(org, 50)]) == 1  # a replay plus one new record
    assert await writer.write(records + records) == 0  # duplicates inside one batch too
    count, billed, hourly = await _ledger_totals(ledger_engine, org)
    assert (count, hourly) == (51, 51)
    assert billed == sum(r.billed_ticks for r in [*records, make_record(org, 50)])


async def test_hourly_rollups_sum_by_hour_key_and_model(ledger_engine: AsyncEngine) -> None:
    org = "org_" + secrets.token_hex(4)
    hour = 3_600_000
    base = 1_764_000_000_000 // hour * hour
    records = [make_record(org, 0, started_at_ms=base), make_record(org, 1, started_at_ms=base + hour - 1),
               make_record(org, 2, started_at_ms=base + hour, reported=False),
               make_record(org, 3, started_at_ms=base + 5, model="grok-4")]
    await LedgerWriter(ledger_engine).write(records)
    async with ledger_engine.connect() as conn:
        rows = (await conn.execute(select(UsageHourly.model, UsageHourly.requests, UsageHourly.prompt_tokens,
                                          UsageHourly.counted_requests)
                                   .where(UsageHourly.org_id == org)
                                   .order_by(UsageHourly.hour, UsageHourly.model))).all()
    assert [tuple(r) for r in rows] == [("grok-4", 1, 103, 0), ("grok-code-fast-1", 2, 201, 0),
                                        ("grok-code-fast-1", 1, 102, 1)]


async def test_writer_killed_between_insert_and_ack_loses_and_doubles_nothing(
        ledger_engine: AsyncEngine, redis_client: aioredis.Redis, stream_key: str) -> None:
    org = "org_" + secrets.token_hex(4)
    records = [make_record(org, i) for i in range(30)]
    for r in records[:20]:
        await redis_client.xadd(stream_key, {FIELD: r.encode()})
    writer = LedgerWriter(ledger_engine)
    doomed = StreamConsumer(redis_client, stream_key, writer, consumer="doomed", batch_size=100, block_ms=10)
    batch = await doomed.read()
    assert await doomed.store(batch) == 20
    # The writer dies here: committed, never acknowledged. The entries stay pending on "doomed".
    pending = await redis_client.xpending(stream_key, GROUP)
    assert pending["pending"] == 20
    for r in records[20:]:
        await redis_client.xadd(stream_key, {FIELD: r.encode()})
    heir = StreamConsumer(redis_client, stream_key, writer, consumer="heir", batch_size=100, block_ms=10,
                          claim_idle_ms=0)
    assert await heir.step() == 0  # the claimed entries were already in the ledger
    assert await heir.step() == 10  # then the new ones
    assert await heir.step() == 0
    assert (await redis_client.xpending(stream_key, GROUP))["pending"] == 0
    assert await heir.backlog() == 0
    count, billed, hourly = await _ledger_totals(ledger_engine, org)
    assert (count, hourly) == (30, 30)
    assert billed == sum(r.billed_ticks for r in records)


async def test_a_failed_write_leaves_entries_pending_and_poison_goes_to_dead_letters(
        ledger_engine: AsyncEngine, redis_client: aioredis.Redis, stream_key: str) -> None:
    org = "org_" + secrets.token_hex(4)
    await redis_client.xadd(stream_key, {FIELD: make_record(org, 0).encode()})
    await redis_client.xadd(stream_key, {FIELD: b"not json"})
    consumer = StreamConsumer(redis_client, stream_key, LedgerWriter(ledger_engine), consumer="c", block_ms=10,
                              claim_idle_ms=0)
    assert await consumer.step() == 1
    assert await redis_client.xlen(stream_key + ":dead") == 1
    assert await consumer.backlog() == 0


async def test_queue_consumer_puts_a_batch_back_when_the_write_fails(ledger_engine: AsyncEngine) -> None:
    org = "org_" + secrets.token_hex(4)
    queue: deque[bytes] = deque(make_record(org, i).encode() for i in range(5))
    # A record whose org id is too long for the column fails on PostgreSQL; SQLite ignores lengths, so
    # make the failure portable: a null request id violates NOT NULL everywhere.
    queue.append(make_record(org, 5, request_id=None).encode())  # type: ignore[arg-type]
    consumer = QueueConsumer(queue, LedgerWriter(ledger_engine), batch_size=100)
    try:
        await consumer.step()
        raise AssertionError("the write should have failed")
    except Exception as exc:  # noqa: BLE001 - the driver's integrity error, whichever dialect
        assert "null" in str(exc).lower() or "NOT NULL" in str(exc)
    assert len(queue) == 6
    queue.pop()
    assert await consumer.step() == 5
    assert not queue
