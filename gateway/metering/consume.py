"""The one loop that moves usage records into the ledger, for the in-process writers and for the
standalone ``gateway billing writer`` alike.

It never dies: a transient failure (Redis or the database unreachable, a connection terminated) is
logged, counted in ``gateway_ledger_errors_total`` and retried with backoff, the batch staying
pending; any other failure is logged with its traceback and handled the same way. Records that can
never be written go to the dead letters (``billing/ledger/sink.py``) and never block the others.
With Redis, each pass also checks the stream's epoch: when Redis lost the stream, the replica hands
its spooled records to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from billing.ledger.consumer import FIELD, AnyRedis, StreamConsumer
from billing.ledger.sink import Stored
from billing.ledger.write_errors import is_transient
from gateway.background import Backoff, pause
from gateway.metering.spool import Spool

log = logging.getLogger("gateway.ledger")


@dataclass
class LedgerStats:
    """This process's ledger work (exported by the metrics collector)."""

    batches: int = 0  # SQL batches written
    records: int = 0  # records newly inserted by them
    errors: int = 0  # failed passes (the batch stays pending)
    dead_letters: int = 0  # records moved to the dead letters
    backlog: int = 0  # entries in the usage stream or queue not yet written (last seen)
    last_write: float = 0.0  # Unix time of the last pass that wrote (or found nothing to write)
    groups_recreated: int = 0  # the stream's group was gone (Redis lost its data)
    spool_replays: int = 0
    spool_records: int = 0

    def stored(self, result: Stored) -> None:
        if result.inserted or result.dead:
            self.batches += 1
        self.records += result.inserted
        self.dead_letters += result.dead
        self.last_write = time.time()


class Source(Protocol):
    @property
    def caught_up(self) -> bool: ...

    async def step(self) -> Stored: ...

    async def backlog(self) -> int: ...


async def consume(source: Source, stats: LedgerStats, stop: asyncio.Event, idle_s: float,
                  spool: Spool | None = None, redis: AnyRedis | None = None) -> None:
    backoff = Backoff(first=0.2, most=2.0)  # retrying costs a connection attempt; waiting delays billing
    while not stop.is_set():
        try:
            if spool is not None and redis is not None and isinstance(source, StreamConsumer):
                await check_epoch(source, spool, stats, redis)
            stats.stored(await source.step())
            backoff.reset()
            stats.backlog = await source.backlog()
            if source.caught_up and not await pause(stop, idle_s):  # let records gather into batches
                return
            continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must outlive every failure: logged, counted, retried
            stats.errors += 1
            wait = backoff.failed()
            if is_transient(exc) or isinstance(exc, RedisError):
                log.warning("ledger writer: %s: %s; entries stay pending, retrying in %.1fs",
                            exc.__class__.__name__, exc, wait)
            else:
                log.exception("ledger writer failed; entries stay pending, retrying in %.1fs", wait)
        with contextlib.suppress(RedisError, OSError):
            stats.backlog = await asyncio.wait_for(source.backlog(), 1.0)
        await pause(stop, wait)


async def check_epoch(source: StreamConsumer, spool: Spool, stats: LedgerStats, redis: AnyRedis) -> None:
    """When the consumer's shard of the stream lost its data, or another master serves it (a failover: the
    entries not yet replicated are gone), append this replica's spooled records of that shard to it again
    (the ledger's insert is idempotent by request id: what was written already changes nothing)."""
    epoch = await source.epoch() + b"@" + source.serving_node()
    if not spool.epoch_changed(epoch, source.shard):
        return
    records = spool.recent(source.shard)
    log.warning("the usage stream %s was lost or failed over (now %s); handing %d spooled records to it again",
                source.stream, epoch.decode(errors="replace"), len(records))
    stats.groups_recreated += 1
    for start in range(0, len(records), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for raw in records[start:start + 500]:
                pipe.xadd(source.stream, {FIELD: raw})
            await pipe.execute()
    stats.spool_replays += 1
    stats.spool_records += len(records)
