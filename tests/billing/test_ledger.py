"""The ledger is exactly-once: replays, retries and a writer killed between insert and acknowledge."""

from __future__ import annotations

import secrets
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.consumer import FIELD, GROUP, QueueConsumer, StreamConsumer
from billing.ledger.dead_letters import DeadLetters
from billing.ledger.ledger_tables import UsageHourly, UsageRow
from billing.ledger.sink import LedgerSink, Stored
from billing.ledger.writer import LedgerWriter
from billing.money import REFERENCE_RATES, PlanBook, PricePlan, Rates
from billing.usage_record import UsageRecord, tokens_from_usage
from gateway.db import engine as db
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
    sink = LedgerSink(LedgerWriter(ledger_engine), DeadLetters(ledger_engine))
    doomed = StreamConsumer(redis_client, stream_key, sink, epoch_key=stream_key + ":epoch", consumer="doomed",
                            batch_size=100, block_ms=10)
    batch = await doomed.read()
    assert (await sink.store(batch.records)).inserted == 20
    # The writer dies here: committed, never acknowledged. The entries stay pending on "doomed".
    pending = await redis_client.xpending(stream_key, GROUP)
    assert pending["pending"] == 20
    for r in records[20:]:
        await redis_client.xadd(stream_key, {FIELD: r.encode()})
    heir = StreamConsumer(redis_client, stream_key, sink, epoch_key=stream_key + ":epoch", consumer="heir",
                          batch_size=100, block_ms=10, claim_idle_ms=0)
    assert (await heir.step()).inserted == 0  # the claimed entries were already in the ledger
    assert (await heir.step()).inserted == 10  # then the new ones
    assert (await heir.step()).inserted == 0
    assert (await redis_client.xpending(stream_key, GROUP))["pending"] == 0
    assert await heir.backlog() == 0
    count, billed, hourly = await _ledger_totals(ledger_engine, org)
    assert (count, hourly) == (30, 30)
    assert billed == sum(r.billed_ticks for r in records)


async def test_poison_goes_to_the_dead_letters_and_the_rest_is_written(
        ledger_engine: AsyncEngine, redis_client: aioredis.Redis, stream_key: str) -> None:
    org = "org_" + secrets.token_hex(4)
    await redis_client.xadd(stream_key, {FIELD: make_record(org, 0).encode()})
    await redis_client.xadd(stream_key, {FIELD: b"not json"})
    dead = DeadLetters(ledger_engine)
    before = await dead.count()
    consumer = StreamConsumer(redis_client, stream_key, LedgerSink(LedgerWriter(ledger_engine), dead),
                              epoch_key=stream_key + ":epoch", consumer="c", block_ms=10, claim_idle_ms=0)
    assert await consumer.step() == Stored(inserted=1, dead=1)
    assert await dead.count() == before + 1
    assert await consumer.backlog() == 0


async def test_queue_consumer_puts_a_batch_back_when_the_database_is_unreachable(
        ledger_engine: AsyncEngine) -> None:
    org = "org_" + secrets.token_hex(4)
    queue: deque[bytes | UsageRecord] = deque(make_record(org, i).encode() for i in range(4))
    queue.append(make_record(org, 4))  # the embedded gateway queues the record object itself
    # Nothing listens on port 1: the driver cannot connect, a transient failure.
    down = db.make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    consumer = QueueConsumer(queue, LedgerSink(LedgerWriter(down), DeadLetters(down)), batch_size=100)
    with pytest.raises(OSError):
        await consumer.step()
    await down.dispose()
    assert len(queue) == 5
    sink = LedgerSink(LedgerWriter(ledger_engine), DeadLetters(ledger_engine))
    consumer = QueueConsumer(queue, sink, batch_size=100)
    assert await consumer.step() == Stored(inserted=5, dead=0)
    assert not queue


async def test_a_record_the_ledger_cannot_hold_goes_to_the_dead_letters_alone(ledger_engine: AsyncEngine) -> None:
    """The batch is split until the failing record stands alone; the records around it are written."""
    org = "org_" + secrets.token_hex(4)
    good = [make_record(org, i) for i in range(9)]
    # Passes the field checks but no datetime can hold it: the write itself fails for this record.
    far = make_record(org, 99, started_at_ms=9_000_000_000_000_000)
    too_long = make_record(org, 98, model="m" * 300)  # a refused request's model name (defect 1)
    huge = make_record(org, 97, billed_ticks=1 << 64)  # usage worth more than int64 ticks
    dead = DeadLetters(ledger_engine)
    sink = LedgerSink(LedgerWriter(ledger_engine), dead)
    stored = await sink.store([*good[:4], far, too_long, *good[4:], huge])
    assert stored == Stored(inserted=9, dead=3)
    letters = {d.id: d.reason for d in await dead.oldest(1000)}
    assert "year" in letters[far.request_id] or "range" in letters[far.request_id]
    assert "model" in letters[too_long.request_id] and "billed_ticks" in letters[huge.request_id]
    count, _, _ = await _ledger_totals(ledger_engine, org)
    assert count == 9
    # Replaying after the cause is fixed: here, nothing changed, so they stay dead with their reason.
    written, failed = await dead.replay(sink.writer, [far.request_id, too_long.request_id])
    assert written == 0 and {f.id for f in failed} == {far.request_id, too_long.request_id}


_count = st.integers(min_value=0, max_value=10**6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=_count, cached=_count, completion=_count, reasoning=_count, xai=st.booleans(),
       rates=st.one_of(st.none(), st.builds(Rates, st.integers(0, 10**5), st.integers(0, 10**5),
                                            st.integers(0, 10**5))),
       minutes=st.integers(-120, 120))
async def test_property_ledger_cost_is_tokens_times_the_plan_rates(
        ledger_engine: AsyncEngine, prompt: int, cached: int, completion: int, reasoning: int, xai: bool,
        rates: Rates | None, minutes: int) -> None:
    start = datetime(2026, 11, 29, 12, tzinfo=UTC)
    plan = PricePlan("p", "org_prop", starts_at=start, ends_at=start + timedelta(hours=1), rates=rates)
    if not xai:
        completion = max(completion, reasoning)  # inside: completion includes reasoning
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion + (reasoning if xai else 0),
             "prompt_tokens_details": {"cached_tokens": cached},
             "completion_tokens_details": {"reasoning_tokens": reasoning}}
    at = start + timedelta(minutes=minutes)
    tokens = tokens_from_usage(usage)
    charge = PlanBook(plans=[plan]).charge("org_prop", "grok-code-fast-1", at, tokens)
    record = make_record("org_prop", 0, request_id="req_prop_" + secrets.token_hex(6),
                         started_at_ms=int(at.timestamp() * 1000), prompt_tokens=tokens.prompt,
                         cached_tokens=tokens.cached, output_tokens=tokens.output, reasoning_tokens=tokens.reasoning,
                         list_ticks=charge.list_ticks, billed_ticks=charge.billed_ticks, plan=charge.plan)
    assert await LedgerWriter(ledger_engine).write([record]) == 1
    async with ledger_engine.connect() as conn:
        row = (await conn.execute(select(UsageRow).where(UsageRow.request_id == record.request_id))).one()
    applied = (rates or REFERENCE_RATES) if plan.covers("grok-code-fast-1", at) else REFERENCE_RATES
    output = completion + (reasoning if xai and reasoning else 0)
    c = min(cached, prompt)
    assert row.output_tokens == output
    assert row.billed_ticks == (prompt - c) * applied.input + c * applied.cached + output * applied.output
    assert row.list_ticks == (prompt - c) * 2_000 + c * 200 + output * 15_000


def test_a_lost_connection_is_never_blamed_on_the_records() -> None:
    """How the writer's failures are told apart: the value-free wrapper keeps the driver's class, and
    SQLAlchemy's wrapping is looked through (a wrong answer dead-letters good records)."""
    import asyncpg
    from sqlalchemy import exc as sa_exc

    from billing.ledger.write_errors import is_record_error, is_transient
    from billing.ledger.writer import LedgerWriteError

    lost = LedgerWriteError("ConnectionDoesNotExistError (SQLSTATE 08003): connection was closed")
    lost.driver_class = asyncpg.exceptions.ConnectionDoesNotExistError
    bad = LedgerWriteError("DataError in ledger column model; values omitted")
    bad.driver_class = asyncpg.exceptions.StringDataRightTruncationError
    try:
        try:
            raise asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
        except asyncpg.PostgresError as driver:
            raise sa_exc.DBAPIError("connect", None, driver) from driver
    except sa_exc.DBAPIError as wrapped:
        starting = wrapped
    assert is_transient(lost) and not is_record_error(lost)
    assert is_record_error(bad) and not is_transient(bad)
    assert is_transient(starting) and not is_record_error(starting)
    assert is_transient(ConnectionRefusedError()) and is_record_error(OverflowError())
