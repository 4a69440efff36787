"""Moving usage records from where the request path left them into the SQL ledger.

``StreamConsumer``: a Redis stream read through a consumer group. A batch is read, written with the
idempotent insert, and only after the commit acknowledged (XACK) and deleted. Entries a dead writer
read but never acknowledged stay pending and are claimed again (XAUTOCLAIM) once idle for
``claim_idle_ms``; the idempotent insert makes the second write a no-op for rows already committed.

If Redis lost its data (a restart without persistence, a failover to a replica that never had the
group), reads answer NOGROUP: the consumer creates the group again and goes on; the ``epoch`` key
set with the group tells every replica that it happened (see ``StreamConsumer.epoch``).

``QueueConsumer``: the embedded default, an in-process queue drained into SQLite in batches.

Both hand their batches to a ``LedgerSink``, which moves a record that can never be written to the dead
letters instead of letting it block the records behind it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError, SlotNotCoveredError

from billing.ledger.dead_letters import DeadLetter, letter_for
from billing.ledger.sink import LedgerSink, Stored
from billing.usage_record import UsageRecord

log = logging.getLogger("billing.ledger")

GROUP = "ledger"
FIELD = b"r"

AnyRedis = Redis | RedisCluster  # every command here touches one stream's slot (its key and its epoch share a tag)


@dataclass(frozen=True, slots=True)
class Batch:
    ids: list[bytes]
    records: list[UsageRecord]
    poison: list[DeadLetter]  # entries that are not usage records


def _sort(raws: list[bytes | UsageRecord]) -> tuple[list[UsageRecord], list[DeadLetter]]:
    """The usage records among ``raws`` (encoded, or already records), and a dead letter for each entry
    that is not one."""
    records: list[UsageRecord] = []
    poison: list[DeadLetter] = []
    for raw in raws:
        if isinstance(raw, UsageRecord):
            records.append(raw)
            continue
        try:
            records.append(UsageRecord.decode(raw))
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            poison.append(letter_for(raw, f"not a usage record: {exc}"))
    return records, poison


def _decode(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> Batch:
    records, poison = _sort([fields.get(FIELD, b"") for _, fields in entries])
    return Batch([entry_id for entry_id, _ in entries], records, poison)


def _nogroup(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc)


class StreamConsumer:
    def __init__(self, redis: AnyRedis, stream: str, sink: LedgerSink, *, epoch_key: str, consumer: str | None = None,
                 batch_size: int = 2000, block_ms: int = 1000, claim_idle_ms: int = 30_000, shard: int = 0) -> None:
        self._redis = redis
        self.stream = stream
        self.shard = shard  # which shard of the usage stream (the spool replays per shard)
        self._epoch_key = epoch_key
        self._sink = sink
        self.consumer = consumer or f"writer-{os.getpid()}-{os.urandom(3).hex()}"
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._group_ready = False
        self._next_claim = 0.0
        self.last_read = 0  # entries the last read returned: fewer than a batch means caught up
        self.groups_recreated = 0  # times a read found the group gone (Redis lost its data)
        # A batch was read but not acknowledged (its write failed): read this consumer's pending entries
        # again at once, instead of waiting for them to be claimed as a dead writer's after claim_idle_ms.
        self._unacked = False

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self._redis.set(self._epoch_key, os.urandom(8).hex(), nx=True)
        self._group_ready = True

    async def epoch(self) -> bytes:
        """The token of the stream's current life; it changes when Redis lost the stream and its group."""
        value = await self._redis.get(self._epoch_key)
        if value is None:  # lost with the data: set a new one (with the group) for everybody
            self._group_ready = False
            await self.ensure_group()
            value = await self._redis.get(self._epoch_key)
        return value if isinstance(value, bytes) else str(value).encode()

    def serving_node(self) -> bytes:
        """The node that serves the stream now (Redis Cluster: its master's address, as the client last
        learnt it; one Redis: empty). A new one after a failover may lack the last entries (replication
        is asynchronous), so a change is handled like a lost stream: the spool is appended again."""
        if isinstance(self._redis, RedisCluster):
            try:
                node = self._redis.get_node_from_key(self.stream)
            except SlotNotCoveredError:  # not learnt yet, or no master serves it now
                return b""
            return node.name.encode() if node is not None else b""
        return b""

    async def read(self) -> Batch:
        """Entries to write: first those another (dead) writer left pending, then new ones."""
        await self.ensure_group()
        try:
            return await self._read()
        except ResponseError as exc:
            if not _nogroup(exc):
                raise
        log.warning("the ledger group on %s is gone (Redis lost its data); creating it again", self.stream)
        self.groups_recreated += 1
        self._group_ready = False
        self._next_claim = 0.0
        await self.ensure_group()
        return await self._read()

    async def _read(self) -> Batch:
        entries: list[Any] = []
        if self._unacked:  # the last batch failed: its entries are still ours, pending; retry them first
            own: Any = await self._redis.xreadgroup(GROUP, self.consumer, {self.stream: "0"}, count=self._batch_size)
            entries = [e for e in own[0][1] if e[1]] if own else []
            self._unacked = bool(entries)
        now = time.monotonic()
        if not entries and now >= self._next_claim:  # look for a dead writer's entries now and then, not every batch
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

    async def ack(self, batch: Batch) -> None:
        if not batch.ids:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, *batch.ids)
            pipe.xdel(self.stream, *batch.ids)
            await pipe.execute()

    @property
    def caught_up(self) -> bool:
        return self.last_read < self._batch_size

    async def step(self) -> Stored:
        """Read, write and acknowledge one batch; returns what was stored."""
        batch = await self.read()
        self._unacked = bool(batch.ids)
        stored = await self._sink.store(batch.records, batch.poison)
        await self.ack(batch)  # only after the commit
        self._unacked = False
        return stored

    async def backlog(self) -> int:
        """Entries in the stream not yet acknowledged and deleted."""
        return int(await self._redis.xlen(self.stream))


class QueueConsumer:
    """Drains an in-process queue of records (objects, or encoded when a Redis trip fell back to local
    state); a failed write puts the batch back."""

    caught_up = True

    def __init__(self, queue: deque[bytes | UsageRecord], sink: LedgerSink, batch_size: int = 2000) -> None:
        self._queue = queue
        self._sink = sink
        self._batch_size = batch_size

    def pending(self) -> int:
        return len(self._queue)

    async def step(self) -> Stored:
        taken: list[bytes | UsageRecord] = []
        while self._queue and len(taken) < self._batch_size:
            taken.append(self._queue.popleft())
        if not taken:
            return Stored(0, 0)
        records, poison = _sort(taken)
        try:
            return await self._sink.store(records, poison)
        except BaseException:
            self._queue.extendleft(reversed(taken))
            raise

    async def backlog(self) -> int:
        return len(self._queue)

