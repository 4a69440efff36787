"""The ledger writer as a process of its own: consumers of the usage stream writing SQL batches.

Replicas started with ``GATEWAY_LEDGER_WRITERS=0`` leave this work to one or more of these processes
(``gateway billing writer``), so request-serving CPU is not spent on SQL. Same consumer group, same
exactly-once rules as the in-process writers.
"""

from __future__ import annotations

import asyncio
import logging
import os

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from billing.ledger.consumer import StreamConsumer
from billing.ledger.writer import LedgerWriter
from gateway.config import Settings
from gateway.db import engine as db
from gateway.state.keyspace import KeySpace

log = logging.getLogger("gateway.ledger")


async def _consume(consumer: StreamConsumer, idle_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await consumer.step()
            if consumer.caught_up:
                await asyncio.sleep(idle_s)
        except (RedisError, SQLAlchemyError, OSError) as exc:
            log.warning("ledger writer: %s; entries stay pending, retrying", exc)
            await asyncio.sleep(1.0)


async def run_writer(settings: Settings, writers: int, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    if settings.auto_migrate:
        await db.upgrade(settings.sqlalchemy_url)
    engine = db.make_engine(settings.sqlalchemy_url)
    redis = Redis.from_url(settings.redis_url)
    writer = LedgerWriter(engine)
    stream = KeySpace(settings.redis_prefix).usage_stream()
    name = f"writer-{os.getpid()}-{os.urandom(3).hex()}"
    consumers = [StreamConsumer(redis, stream, writer, consumer=f"{name}-{i}", batch_size=settings.ledger_batch_size,
                                block_ms=max(1, int(settings.ledger_flush_interval_s * 1000)))
                 for i in range(max(1, writers))]
    log.info("ledger writer %s: %d consumers on %s", name, len(consumers), stream)
    try:
        await asyncio.gather(*(_consume(c, settings.ledger_flush_interval_s, stop) for c in consumers))
    finally:
        await redis.aclose()
        await engine.dispose()
