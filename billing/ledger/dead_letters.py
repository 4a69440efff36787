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

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger.ledger_tables import DeadLetterRow
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

    async def oldest(self, limit: int = 100) -> list[DeadLetter]:
        async with self._engine.connect() as conn:
            result = await conn.execute(select(DeadLetterRow).order_by(DeadLetterRow.created_at).limit(limit))
            return [DeadLetter(r.id, r.raw, r.reason, r.created_at) for r in result]

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return len((await conn.execute(select(DeadLetterRow.id))).all())

    async def replay(self, writer: LedgerWriter, ids: Sequence[str] | None = None) -> tuple[int, list[DeadLetter]]:
        """Write the letters (all, or those of ``ids``) into the ledger one by one; those written are
        removed. Returns (records written, letters that still fail, with the new reason)."""
        letters = await self.oldest(limit=1_000_000)
        if ids is not None:
            wanted = set(ids)
            letters = [d for d in letters if d.id in wanted]
        done: list[str] = []
        failed: list[DeadLetter] = []
        for letter in letters:
            try:
                record = UsageRecord.decode(letter.raw)
                problems = record.problems()
                if problems:
                    raise ValueError("; ".join(problems))
                await writer.write([record])
            except (ValueError, TypeError, OverflowError) as exc:
                failed.append(DeadLetter(letter.id, letter.raw, f"{exc.__class__.__name__}: {exc}"[:1000]))
                continue
            done.append(letter.id)
        if done:
            async with self._engine.begin() as conn:
                await conn.execute(delete(DeadLetterRow).where(DeadLetterRow.id.in_(done)))
        return len(done), failed
