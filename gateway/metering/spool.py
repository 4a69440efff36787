"""What this replica handed to the usage stream lately, kept to be handed again if Redis loses it.

Redis without persistence (or a failover to a replica that never had the stream) loses the records
not yet written to the ledger. Each replica keeps the records it appended in the last ``seconds`` (at
least the last ``max_records`` of them within that time); when a ledger consumer sees the stream's epoch
change, the replica appends them again. The ledger's insert is idempotent by request id, so records that
were written already change nothing. Refused requests (rollup counters only, no money) are not spooled.

Records are kept in chunks of about a second (at most ``chunk_records``) per shard, each compressed once
closed: a ~450-byte JSON record costs some 40-60 bytes, where one bytes object per record cost about 600
(bench.soak: the spool held 45 MB at 250 requests/s over its 300 s horizon, RSS grew 21% in 3 minutes).
Trimming drops whole chunks, so the spool may hand on a little more than the horizon or the cap asks
(never less): a repeat is harmless, a record missing is not.
"""

from __future__ import annotations

import time
import zlib
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Open:
    """The chunk a shard's records go to now: their bytes one after the other, and their lengths."""

    started: float
    last: float
    data: bytearray
    lengths: array[int]

    def packed(self) -> bytes:
        return self.lengths.tobytes() + self.data


@dataclass(frozen=True, slots=True)
class _Closed:
    last: float  # when its newest record came
    shard: int
    count: int
    data: bytes  # zlib of the records' lengths (array "I") then their bytes


def _records(count: int, packed: bytes) -> list[bytes]:
    lengths = array("I")
    lengths.frombytes(packed[:count * lengths.itemsize])
    out, at, view = [], count * lengths.itemsize, memoryview(packed)
    for size in lengths:
        out.append(bytes(view[at:at + size]))
        at += size
    return out


class Spool:
    """Records with the stream shard they went to: a shard that lost its data gets its own back."""

    def __init__(self, seconds: float, max_records: int, chunk_s: float = 1.0, chunk_records: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._max = max(1, max_records)
        self._chunk_s = chunk_s
        self._chunk_records = max(1, min(chunk_records, self._max))
        self._clock = clock
        self._open: dict[int, _Open] = {}
        self._closed: deque[_Closed] = deque()
        self._closed_count = 0
        self._epochs: dict[int, bytes] = {}
        self.replays = 0
        self.replayed = 0

    def add(self, raw: bytes, shard: int = 0) -> None:
        now = self._clock()
        chunk = self._open.get(shard)
        if chunk is None:
            chunk = self._open[shard] = _Open(now, now, bytearray(), array("I"))
        # Copied into the chunk: a bytes object from orjson.dumps keeps its whole 4-8 KB output buffer.
        chunk.data += raw
        chunk.lengths.append(len(raw))
        chunk.last = now
        count = len(chunk.lengths)
        if count >= self._chunk_records or now - chunk.started >= self._chunk_s:
            del self._open[shard]
            self._closed.append(_Closed(now, shard, count, zlib.compress(chunk.packed(), 1)))
            self._closed_count += count
            self._trim(now)

    def _trim(self, now: float) -> None:
        """Drop the oldest chunks while one is wholly past the horizon or the rest still hold the cap."""
        horizon = now - self._seconds
        held = len(self)
        while self._closed and (self._closed[0].last < horizon or held - self._closed[0].count >= self._max):
            dropped = self._closed.popleft()
            self._closed_count -= dropped.count
            held -= dropped.count

    def recent(self, shard: int = 0) -> list[bytes]:
        """The shard's records of the last ``seconds``, oldest first."""
        now = self._clock()
        self._trim(now)
        horizon = now - self._seconds
        out: list[bytes] = []
        for chunk in self._closed:
            if chunk.shard == shard and chunk.last >= horizon:
                out += _records(chunk.count, zlib.decompress(chunk.data))
        current = self._open.get(shard)
        if current is not None and current.last >= horizon:
            out += _records(len(current.lengths), current.packed())
        return out

    def epoch_changed(self, epoch: bytes, shard: int = 0) -> bool:
        """True once per change of a shard's epoch (never for the first one seen)."""
        before = self._epochs.get(shard)
        self._epochs[shard] = epoch
        return before is not None and before != epoch

    def __len__(self) -> int:
        return self._closed_count + sum(len(c.lengths) for c in self._open.values())
