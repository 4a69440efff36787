"""Writing a batch of usage records so that no record can block the others.

``LedgerSink.store`` writes the batch with the idempotent insert. When that fails for a reason that
is not transient, it splits the batch in halves until the records that cause the failure stand alone;
those go to the dead letters with the reason, every other record is written. A transient failure (see
``write_errors``) is raised: the batch stays pending and is retried whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from billing.ledger.dead_letters import DeadLetter, DeadLetters, letter_for
from billing.ledger.write_errors import is_record_error, is_transient
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
        inserted = await self._write(good, letters, top=True)
        if letters:
            for letter in letters:
                log.error("usage record %s moved to the dead letters: %s", letter.id, letter.reason)
            await self.dead_letters.add(letters)
        return Stored(inserted, len(letters))

    async def _write(self, records: list[UsageRecord], letters: list[DeadLetter], top: bool = False) -> int:
        if not records:
            return 0
        try:
            return await self.writer.write(records)
        except Exception as exc:  # classified below: transient ones are re-raised, the rest isolated
            if is_transient(exc):
                raise
            failure = exc
        if len(records) == 1:
            record = records[0]
            letters.append(letter_for(record.encode(), f"{failure.__class__.__name__}: {failure}",
                                      record.request_id))
            return 0
        before = len(letters)
        middle = len(records) // 2
        inserted = await self._write(records[:middle], letters) + await self._write(records[middle:], letters)
        if top and len(letters) - before == len(records) and not is_record_error(failure):
            # Every record failed alone with an error we cannot tie to records: not theirs. Keep them pending.
            del letters[before:]
            raise failure
        return inserted
