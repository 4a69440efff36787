"""Moving usage records from where the request path left them into the SQL ledger.

``StreamConsumer``: a Redis stream read through a consumer group. A batch is read, written with the
idempotent insert, and only after the commit acknowledged (XACK) and deleted. Entries a dead writer
read but never acknowledged stay pending and are claimed again (XAUTOCLAIM) once idle for
``claim_idle_ms``; the idempotent insert makes the second write a no-op for rows already committed.

``QueueConsumer``: the embedded default, an in-process queue drained into SQLite in batches.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from billing.ledger.writer import LedgerWriter
from billing.usage_record import UsageRecord

log = logging.getLogger("billing.ledger")

GROUP = "ledger"
FIELD = b"r"


@dataclass(frozen=True, slots=True)
class Batch:
    ids: list[bytes]
    records: list[UsageRecord]
    poison: list[tuple[bytes, bytes]]  # (id, raw) of entries that are not usage records


def _decode(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> Batch:
    ids: list[bytes] = []
    records: list[UsageRecord] = []
    poison: list[tuple[bytes, bytes]] = []
    for entry_id, fields in entries:
        ids.append(entry_id)
        raw = fields.get(FIELD, b"")
        try:
            records.append(UsageRecord.decode(raw))
        except (orjson.JSONDecodeError, TypeError) as exc:
            log.error("usage entry %s is not a usage record (%s); moved to the dead-letter stream", entry_id, exc)
            poison.append((entry_id, raw))
    return Batch(ids, records, poison)


class StreamConsumer:
    def __init__(self, redis: Redis, stream: str, writer: LedgerWriter, *, consumer: str | None = None,
                 batch_size: int = 2000, block_ms: int = 1000, claim_idle_ms: int = 30_000) -> None:
        self._redis = redis
        self.stream = stream
        self._writer = writer
        self.consumer = consumer or f"writer-{os.getpid()}-{os.urandom(3).hex()}"
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._group_ready = False
        self._next_claim = 0.0
        self.last_read = 0  # entries the last read returned: fewer than a batch means caught up

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def read(self) -> Batch:
        """Entries to write: first those another (dead) writer left pending, then new ones."""
        await self.ensure_group()
        entries: list[Any] = []
        now = time.monotonic()
        if now >= self._next_claim:  # look for a dead writer's entries now and then, not every batch
            claimed = await self._redis.xautoclaim(self.stream, GROUP, self.consumer, self._claim_idle_ms,
                                                   start_id="0-0", count=self._batch_size)
            entries = [e for e in claimed[1] if e[1] is not None] if claimed else []
            if len(entries) < self._batch_size:
                self._next_claim = now + self._claim_idle_ms / 2000
        if not entries:
            found: Any = await self._redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"},
                                                      count=self._batch_size, block=self._block_ms)
            entries = found[0][1] if found else []
        self.last_read = len(entries)
        return _decode(entries)

    async def store(self, batch: Batch) -> int:
        return await self._writer.write(batch.records)

    async def ack(self, batch: Batch) -> None:
        if not batch.ids:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for entry_id, raw in batch.poison:
                pipe.xadd(self.stream + ":dead", {FIELD: raw, b"id": entry_id})
            pipe.xack(self.stream, GROUP, *batch.ids)
            pipe.xdel(self.stream, *batch.ids)
            await pipe.execute()

    @property
    def caught_up(self) -> bool:
        return self.last_read < self._batch_size

    async def step(self) -> int:
        """Read, write and acknowledge one batch; returns the number of new ledger rows."""
        batch = await self.read()
        inserted = await self.store(batch)
        await self.ack(batch)  # only after the commit
        return inserted

    async def backlog(self) -> int:
        """Entries in the stream not yet acknowledged and deleted."""
        return int(await self._redis.xlen(self.stream))


class QueueConsumer:
    """Drains an in-process queue of records (objects, or encoded when a Redis trip fell back to local
    state); a failed write puts the batch back."""

    def __init__(self, queue: deque[bytes | UsageRecord], writer: LedgerWriter, batch_size: int = 2000) -> None:
        self._queue = queue
        self._writer = writer
        self._batch_size = batch_size

    def pending(self) -> int:
        return len(self._queue)

    async def step(self) -> int:
        taken: list[bytes | UsageRecord] = []
        while self._queue and len(taken) < self._batch_size:
            taken.append(self._queue.popleft())
        if not taken:
            return 0
        records: list[UsageRecord] = []
        for raw in taken:
            if isinstance(raw, UsageRecord):
                records.append(raw)
                continue
            try:
                records.append(UsageRecord.decode(raw))
            except (orjson.JSONDecodeError, TypeError) as exc:
                log.error("dropping a queued entry that is not a usage record: %s", exc)
        try:
            return await self._writer.write(records)
        except BaseException:
            self._queue.extendleft(reversed(taken))
            raise

