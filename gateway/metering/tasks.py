"""Billing's part of the lifespan: the price catalog, the stages, the ledger writer and the Stripe sync.

Background tasks, per replica:
- the ledger writer: with Redis, a consumer in the ``ledger`` group of the usage stream (replicas share
  the work; entries a dead replica left pending are claimed after 30 s); always, a drain of the
  in-process queue (the embedded default, and records taken while Redis was unreachable);
- the price-plan refresh;
- the Stripe sync (when a Stripe key is set), run by one replica at a time under a Redis lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.consumer import QueueConsumer, StreamConsumer
from billing.ledger.writer import LedgerWriter
from billing.stripe.sync import SyncReport
from gateway.config import Settings
from gateway.metering.budget import Budgets
from gateway.metering.stage import Metering, PriceCatalog, local_queue
from gateway.services.billing import BillingService
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState

log = logging.getLogger("gateway.billing")

_STORE_ERRORS = (RedisError, SQLAlchemyError, OSError, ConnectionError, TimeoutError)
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class BillingStats:
    """Counters of this replica's background billing work (exported by the metrics collector)."""

    ledger_batches: int = 0  # SQL batches written (stream or in-process queue)
    ledger_records: int = 0  # records newly inserted by them
    ledger_errors: int = 0  # batches that failed and stay pending
    stream_backlog: int = 0  # entries in the Redis usage stream not yet written and acknowledged (last seen)
    stripe_runs_ok: int = 0
    stripe_runs_failed: int = 0
    stripe_events_sent: int = 0
    stripe_events_failed: int = 0
    stripe_last_success: float = 0.0  # Unix time of the last sync that ran without a failure


@dataclass
class BillingRuntime:
    settings: Settings
    service: BillingService
    catalog: PriceCatalog
    keyspace: KeySpace
    redis: Redis | None
    queue_consumer: QueueConsumer
    stream_consumers: list[StreamConsumer]
    # The two stages (None with metering off); their place in the request path is runtime.stage_order.
    metering: Metering | None = None
    budgets: Budgets | None = None
    # Stopped by setting this, never by cancelling a task in the middle of a SQL transaction.
    stats: BillingStats = field(default_factory=BillingStats)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, service: BillingService, engine: AsyncEngine, keyspace: KeySpace,
              redis: Redis | None, local_state: MemoryState) -> BillingRuntime:
        catalog = PriceCatalog()
        writer = LedgerWriter(engine)
        stream_key = keyspace.usage_stream()
        queue = QueueConsumer(local_queue(local_state, stream_key), writer, settings.ledger_batch_size)
        streams = []
        if redis is not None:
            name = f"writer-{os.getpid()}-{os.urandom(3).hex()}"
            streams = [StreamConsumer(redis, stream_key, writer, consumer=f"{name}-{i}",
                                      batch_size=settings.ledger_batch_size,
                                      block_ms=max(1, int(settings.ledger_flush_interval_s * 1000)))
                       for i in range(max(0, settings.ledger_writers))]
        metering = budgets = None
        if settings.metering_enabled:
            budgets = Budgets(keyspace, catalog, settings.budget_default_output_tokens,
                              settings.budget_reservation_ttl_s)
            metering = Metering(keyspace, catalog, shared=redis is not None)
        return cls(settings, service, catalog, keyspace, redis, queue, streams, metering, budgets)

    async def refresh_plans(self) -> None:
        self.catalog.book = await self.service.plan_book()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._drain_queue()),
                       asyncio.create_task(self._every(self.settings.billing_refresh_interval_s, self.refresh_plans))]
        self._tasks += [asyncio.create_task(self._consume_stream(c)) for c in self.stream_consumers]
        if self.settings.stripe_api_key:
            self._tasks.append(asyncio.create_task(self._every(self.settings.stripe_sync_interval_s,
                                                               self.sync_once)))

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless stopping; returns False once the runtime is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    async def flush(self) -> None:
        """Write what is queued in process now (at shutdown; tests call it to read the ledger at once)."""
        while self.queue_consumer.pending():
            self._wrote(await self.queue_consumer.step())

    def _wrote(self, records: int) -> None:
        if records:
            self.stats.ledger_batches += 1
            self.stats.ledger_records += records

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
            self.stats.stripe_runs_failed += 1
            raise
        self._synced(report)
        return report

    def _synced(self, report: SyncReport) -> None:
        self.stats.stripe_events_sent += report.sent
        self.stats.stripe_events_failed += report.failed
        if report.failed:
            self.stats.stripe_runs_failed += 1
        else:
            self.stats.stripe_runs_ok += 1
            self.stats.stripe_last_success = time.time()

    async def _drain_queue(self) -> None:
        while await self._pause(self.settings.ledger_flush_interval_s):
            try:
                await self.flush()
            except _STORE_ERRORS as exc:
                log.warning("ledger write from the local queue failed (kept, retrying): %s", exc)

    async def _consume_stream(self, consumer: StreamConsumer) -> None:
        while not self._stopping.is_set():
            try:
                self._wrote(await consumer.step())
                self.stats.stream_backlog = await consumer.backlog()  # XLEN: O(1), once a batch
                if consumer.caught_up:  # let records gather: batches, not a SQL statement per request
                    await self._pause(self.settings.ledger_flush_interval_s)
            except _STORE_ERRORS as exc:
                self.stats.ledger_errors += 1
                log.warning("ledger writer: %s; entries stay pending, retrying", exc)
                await self._pause(1.0)

    async def _every(self, interval: float, job: object) -> None:
        while True:
            try:
                await job()  # type: ignore[operator]
            except Exception:  # a background job: log whatever went wrong and try again later
                log.exception("billing job failed; retrying in %.1fs", interval)
            if not await self._pause(interval):
                return

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
