"""Records the ledger can never store, kept with the reason in SQL (``usage_dead_letters``).

A record lands here when writing it fails for a reason of its own (a value its column cannot hold) or
when the stream entry is not a usage record at all; the records behind it are written as usual. An
operator lists them (``gateway billing dead-letters``), fixes the cause, and replays them: a replay
writes them through the idempotent ledger insert and removes those that went in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.ledger_tables import DeadLetterRow
from billing.ledger.write_errors import is_record_error
from billing.ledger.writer import LedgerWriter
from billing.usage_record import UsageRecord


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str  # the request id, or a digest of the raw entry when it is not a record
    raw: bytes
    reason: str
    created_at: datetime | None = None


def letter_for(raw: bytes, reason: str, request_id: str | None = None) -> DeadLetter:
    ident = request_id[:64] if request_id else "raw-" + hashlib.sha256(raw).hexdigest()[:40]
    return DeadLetter(ident, raw, reason[:1000])


class DeadLetters:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, letters: Sequence[DeadLetter]) -> None:
        """Keep them; a letter already kept (a batch read twice) is kept once."""
        if not letters:
            return
        now = datetime.now(UTC)
        rows = [{"id": d.id, "raw": d.raw, "reason": d.reason, "created_at": now} for d in letters]
        async with self._engine.begin() as conn:
            existing = set((await conn.execute(select(DeadLetterRow.id).where(
                DeadLetterRow.id.in_([r["id"] for r in rows])))).scalars())
            fresh = [r for r in rows if r["id"] not in existing]
            if fresh:
                await conn.execute(insert(DeadLetterRow), fresh)

    async def oldest(self, limit: int | None = 100, ids: Sequence[str] | None = None) -> list[DeadLetter]:
        """The letters, oldest first: at most ``limit`` (None: all), only those of ``ids`` when given."""
        query = select(DeadLetterRow).order_by(DeadLetterRow.created_at)
        if ids is not None:
            query = query.where(DeadLetterRow.id.in_(list(ids)))
        if limit is not None:
            query = query.limit(limit)
        async with self._engine.connect() as conn:
            return [DeadLetter(r.id, r.raw, r.reason, r.created_at) for r in await conn.execute(query)]

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(DeadLetterRow))).scalar_one())

    async def replay(self, writer: LedgerWriter, ids: Sequence[str] | None = None) -> tuple[int, list[DeadLetter]]:
        """Write the letters (all, or those of ``ids``) into the ledger one by one; those written are
        removed. Returns (records written, letters that still fail, with the new reason)."""
        letters = await self.oldest(limit=None, ids=ids)
        done: list[str] = []
        failed: list[DeadLetter] = []
        for letter in letters:
            try:
                record = UsageRecord.decode(letter.raw)
                problems = record.problems()
                if problems:
                    raise ValueError("; ".join(problems))
                await writer.write([record])
            except Exception as exc:  # classified: a record's own failure is kept, anything else raised
                if not is_record_error(exc):
                    raise
                failed.append(DeadLetter(letter.id, letter.raw, f"{exc.__class__.__name__}: {exc}"[:1000]))
                continue
            done.append(letter.id)
        async with self._engine.begin() as conn:
            if done:
                await conn.execute(delete(DeadLetterRow).where(DeadLetterRow.id.in_(done)))
            for letter in failed:  # the reason it fails now
                await conn.execute(update(DeadLetterRow).where(DeadLetterRow.id == letter.id)
                                   .values(reason=letter.reason))
        return len(done), failed
