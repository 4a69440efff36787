"""The ledger writer as a process of its own: consumers of the usage stream writing SQL batches.

Replicas started with ``GATEWAY_LEDGER_WRITERS=0`` leave this work to one or more of these processes
(``gateway billing writer``), so request-serving CPU is not spent on SQL. Same consumer group, same
loop (``consume.py``), same exactly-once rules as the in-process writers; it also keeps the ledger's monthly
partitions (created ahead, the retention applied) as in-process writers do.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from billing.ledger.dead_letters import DeadLetters
from billing.ledger.partitions import LedgerPartitions
from billing.ledger.sink import LedgerSink
from billing.ledger.writer import LedgerWriter
from gateway import collector
from gateway.background import TaskFailures, every
from gateway.config import Settings
from gateway.db import engine as db
from gateway.metering.consume import LedgerStats, consume
from gateway.metering.tasks import PARTITION_UPKEEP_S, keep_partitions, stream_consumers
from gateway.state.keyspace import KeySpace
from gateway.state.redis_clients import is_cluster, redis_client

log = logging.getLogger("gateway.ledger")


async def run_writer(settings: Settings, writers: int, stop: asyncio.Event | None = None,
                     stats: LedgerStats | None = None) -> None:
    stop = stop or asyncio.Event()
    stats = stats or LedgerStats()
    if settings.auto_migrate:
        await db.upgrade(settings.sqlalchemy_url)
    engine = db.make_engine(settings.sqlalchemy_url)
    cluster = await is_cluster(settings.redis_url, settings.redis_cluster, settings.redis_timeout_s)
    redis = redis_client(settings.redis_url, cluster, settings.redis_timeout_s)
    keyspace = KeySpace(settings.redis_prefix)
    consumers = stream_consumers(settings, redis, LedgerSink(LedgerWriter(engine), DeadLetters(engine)), keyspace,
                                 max(1, writers))
    log.info("ledger writer: %d consumers on %s", len(consumers),
             ", ".join(keyspace.usage_streams(settings.usage_stream_shards)))
    loops = [consume(c, stats, stop, settings.ledger_flush_interval_s) for c in consumers]
    partitions = LedgerPartitions(engine)
    if partitions.supported:
        failures = TaskFailures(expected=(*db.DB_ERRORS,))
        loops.append(every(PARTITION_UPKEEP_S, "ledger-partitions", functools.partial(keep_partitions, partitions,
                                                                                      settings), stop, failures))
    try:
        with collector.long_lived(settings.gc_threshold):  # its batches are request-sized objects too
            await asyncio.gather(*loops)
    finally:
        await redis.aclose()
        await engine.dispose()
