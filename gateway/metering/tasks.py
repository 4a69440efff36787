"""Metering's part of the lifespan: the price catalog, the two stages, the ledger loops and the Stripe sync.

Background tasks, per replica (each through ``gateway.background``, so none dies silently):
- the ledger loops (``consume.py``): with Redis, consumers in the ``ledger`` group of each shard of the
  usage stream, ``GATEWAY_LEDGER_WRITERS`` per shard (replicas share the work; entries a dead replica
  left pending are claimed after 30 s); always, a
  drain of the in-process queue (the embedded default, and records taken while Redis was unreachable);
- the price-plan refresh;
- with ledger writers on PostgreSQL, the ledger partitions' upkeep (``keep_partitions``: hourly, months
  created ahead and the retention applied; ``billing/ledger/partitions.py``);
- the Stripe sync (when a Stripe key is set), run by one replica at a time under a Redis lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.consumer import QueueConsumer, StreamConsumer
from billing.ledger.dead_letters import DeadLetters
from billing.ledger.partitions import LedgerPartitions
from billing.ledger.sink import LedgerSink
from billing.ledger.writer import LedgerWriter
from billing.stripe.sync import SyncReport
from gateway.background import TaskFailures, every
from gateway.config import Settings
from gateway.metering.budget import Budgets
from gateway.metering.consume import LedgerStats, check_epoch, consume
from gateway.metering.spool import Spool
from gateway.metering.usage_stage import Metering, PriceCatalog, local_queue
from gateway.services.billing import BillingService
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis_clients import AnyRedis

log = logging.getLogger("gateway.billing")

_STORE_ERRORS = (RedisError, SQLAlchemyError, OSError, ConnectionError, TimeoutError)
PARTITION_UPKEEP_S = 3600.0
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class StripeStats:
    """Counters of this replica's Stripe sync (exported by the metrics collector)."""

    runs_ok: int = 0
    runs_failed: int = 0
    events_sent: int = 0
    events_failed: int = 0
    last_success: float = 0.0  # Unix time of the last sync that ran without a failure


async def keep_partitions(partitions: LedgerPartitions, settings: Settings) -> None:
    """One upkeep of the ledger's monthly partitions: the months ahead, then the retention."""
    now = datetime.now(UTC)
    await partitions.ensure(now, settings.ledger_partitions_ahead)
    await partitions.prune(now, settings.ledger_retention_months, require_synced=bool(settings.stripe_api_key))


def stream_consumers(settings: Settings, redis: AnyRedis, sink: LedgerSink, keyspace: KeySpace,
                     count: int) -> list[StreamConsumer]:
    """``count`` consumers of each shard of the usage stream, named after this process (for the group's
    bookkeeping): every shard is read by every replica's (or writer's) consumers."""
    name = f"writer-{os.getpid()}-{os.urandom(3).hex()}"
    return [StreamConsumer(redis, keyspace.usage_stream(shard), sink, epoch_key=keyspace.usage_epoch(shard),
                           consumer=f"{name}-{shard}-{i}", batch_size=settings.ledger_batch_size,
                           block_ms=max(1, int(settings.ledger_flush_interval_s * 1000)), shard=shard)
            for shard in range(settings.usage_stream_shards) for i in range(count)]


@dataclass
class MeteringTasks:
    settings: Settings
    service: BillingService
    catalog: PriceCatalog
    keyspace: KeySpace
    redis: AnyRedis | None
    sink: LedgerSink
    queue_consumer: QueueConsumer
    stream_consumers: list[StreamConsumer]
    spool: Spool
    partitions: LedgerPartitions
    # The two stages (None with metering off); their place in the request path is runtime.stage_order.
    metering: Metering | None = None
    budgets: Budgets | None = None
    ledger: LedgerStats = field(default_factory=LedgerStats)
    stripe: StripeStats = field(default_factory=StripeStats)
    failures: TaskFailures = field(default_factory=TaskFailures)
    # Stopped by setting this, never by cancelling a task in the middle of a SQL transaction.
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, service: BillingService, engine: AsyncEngine, keyspace: KeySpace,
              redis: AnyRedis | None, local_state: MemoryState) -> MeteringTasks:
        catalog = PriceCatalog()
        sink = LedgerSink(LedgerWriter(engine), DeadLetters(engine))
        queue = QueueConsumer(local_queue(local_state), sink, settings.ledger_batch_size)
        # Without in-process writers, one consumer is still built to watch the stream's epoch (no reads).
        streams = (stream_consumers(settings, redis, sink, keyspace, max(1, settings.ledger_writers))
                   if redis is not None else [])
        spool = Spool(settings.ledger_spool_s, settings.ledger_spool_max)
        metering = budgets = None
        if settings.metering_enabled:
            budgets = Budgets(keyspace, catalog, settings.budget_default_output_tokens,
                              settings.budget_reservation_ttl_s)
            metering = Metering(keyspace, catalog, shared=redis is not None, spool=spool,
                                shards=settings.usage_stream_shards)
        return cls(settings, service, catalog, keyspace, redis, sink, queue, streams, spool, LedgerPartitions(engine),
                   metering, budgets)

    async def refresh_plans(self) -> None:
        self.catalog.book = await self.service.plan_book()

    def start(self) -> None:
        s, stop = self.settings, self._stopping
        self._tasks = [
            asyncio.create_task(consume(self.queue_consumer, self.ledger, stop, s.ledger_flush_interval_s)),
            asyncio.create_task(every(s.billing_refresh_interval_s, "price-plans", self.refresh_plans, stop,
                                      self.failures)),
        ]
        if self.partitions.supported and (s.ledger_writers > 0 or self.redis is None):
            self._tasks.append(asyncio.create_task(every(
                PARTITION_UPKEEP_S, "ledger-partitions", functools.partial(keep_partitions, self.partitions, s),
                stop, self.failures)))
        if s.ledger_writers > 0:
            self._tasks += [asyncio.create_task(consume(c, self.ledger, stop, s.ledger_flush_interval_s,
                                                        self.spool, self.redis))
                            for c in self.stream_consumers]
        elif self.stream_consumers:
            self._tasks.append(asyncio.create_task(every(1.0, "usage-epoch", self._watch_epoch, stop,
                                                         self.failures)))
        if s.stripe_api_key:
            self._tasks.append(asyncio.create_task(every(s.stripe_sync_interval_s, "stripe-sync", self.sync_once,
                                                         stop, self.failures)))

    async def _watch_epoch(self) -> None:
        if self.redis is not None:
            watched: set[int] = set()
            for consumer in self.stream_consumers:  # one per shard
                if consumer.shard not in watched:
                    watched.add(consumer.shard)
                    await check_epoch(consumer, self.spool, self.ledger, self.redis)

    async def flush(self) -> None:
        """Write what is queued in process now (at shutdown; tests call it to read the ledger at once)."""
        while self.queue_consumer.pending():
            self.ledger.stored(await self.queue_consumer.step())

    async def sync_once(self) -> bool:
        """One Stripe sync, unless another replica holds the lock. Returns whether it ran."""
        if self.redis is None:
            await self._stripe_sync()
            return True
        lock = self.keyspace.billing_sync_lock()
        token = os.urandom(8).hex()
        ttl_ms = int(max(60.0, self.settings.stripe_sync_interval_s * 2) * 1000)
        if not await self.redis.set(lock, token, nx=True, px=ttl_ms):
            return False
        try:
            report = await self._stripe_sync()
            if report.events_created or report.failed:
                log.info("stripe sync: %s", report)
        finally:
            await self.redis.eval(_RELEASE, 1, lock, token)
        return True

    async def _stripe_sync(self) -> SyncReport:
        try:
            report = await self.service.stripe_sync()
        except Exception:  # counted for the alert, then handled like any failed background job
            self.stripe.runs_failed += 1
            raise
        self.stripe.events_sent += report.sent
        self.stripe.events_failed += report.failed
        if report.failed:
            self.stripe.runs_failed += 1
        else:
            self.stripe.runs_ok += 1
            self.stripe.last_success = time.time()
        return report

    async def close(self, grace_s: float = 10.0) -> None:
        """Let the tasks finish what they are writing, then write what is still queued."""
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*_STORE_ERRORS):
            await self.flush()
