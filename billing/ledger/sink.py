"""Writing a batch of usage records so that no record can block the others.

``LedgerSink.store`` writes the batch with the idempotent insert. When that fails because of a record
(a value its column cannot hold, see ``write_errors``), it splits the batch in halves until the records
that cause the failure stand alone; those go to the dead letters with the reason, every other record is
written. Any other failure (a lost connection, a database down, or one it cannot classify) is raised:
the batch stays pending and is retried whole. A record is never dead-lettered for a fault of the
database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from billing.ledger.dead_letters import DeadLetter, DeadLetters, letter_for
from billing.ledger.write_errors import is_record_error
from billing.ledger.writer import LedgerWriter
from billing.usage_record import UsageRecord

log = logging.getLogger("billing.ledger")


@dataclass(frozen=True, slots=True)
class Stored:
    inserted: int  # new ledger rows
    dead: int  # records moved to the dead letters


class LedgerSink:
    def __init__(self, writer: LedgerWriter, dead_letters: DeadLetters) -> None:
        self.writer = writer
        self.dead_letters = dead_letters

    async def store(self, records: Sequence[UsageRecord], poison: Sequence[DeadLetter] = ()) -> Stored:
        letters = list(poison)
        good: list[UsageRecord] = []
        for record in records:
            problems = record.problems()
            if problems:
                letters.append(letter_for(record.encode(), "invalid record: " + "; ".join(problems), record.request_id))
            else:
                good.append(record)
        inserted = await self._write(good, letters)
        if letters:
            for letter in letters:
                log.error("usage record %s moved to the dead letters: %s", letter.id, letter.reason)
            await self.dead_letters.add(letters)
        return Stored(inserted, len(letters))

    async def _write(self, records: list[UsageRecord], letters: list[DeadLetter]) -> int:
        if not records:
            return 0
        try:
            return await self.writer.write(records)
        except Exception as exc:  # classified: only a record's own failure is isolated, anything else re-raised
            if not is_record_error(exc):
                raise
            failure = exc
        if len(records) == 1:
            record = records[0]
            letters.append(letter_for(record.encode(), f"{failure.__class__.__name__}: {failure}",
                                      record.request_id))
            return 0
        middle = len(records) // 2
        return await self._write(records[:middle], letters) + await self._write(records[middle:], letters)
