"""The usage spool: its memory per record is a fraction of the record's size (chunks compressed once
closed; counted with tracemalloc, never timed), and it hands on at least every record of its horizon and
of its cap, per shard, oldest first."""

from __future__ import annotations

import os
import tracemalloc

from gateway.metering.spool import Spool
from tests.billing.conftest import make_record


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_spooled_record_costs_a_fraction_of_its_size() -> None:
    spool = Spool(seconds=300.0, max_records=10_000)
    # Request ids as random as the gateway's: the part of a record that compresses least.
    records = [make_record("org-spool", i, request_id="req_" + os.urandom(12).hex()) for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for record in records:
            spool.add(record.encode())  # orjson.dumps: its bytes keep a 4-8 KB buffer allocated
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    size = len(records[0].encode())
    assert len(spool) == 2000
    assert grown / 2000 < size / 4, (grown / 2000, size)
    assert spool.recent() == [r.encode() for r in records]


def test_every_record_of_the_horizon_is_handed_on_and_older_chunks_go() -> None:
    clock = _Clock()
    spool = Spool(seconds=10.0, max_records=100_000, chunk_s=1.0, clock=clock)
    for second in range(30):
        for i in range(5):
            spool.add(b"r%d-%d" % (second, i), shard=second % 2)
        clock.now += 1.0
    clock.now -= 1.0  # the last records came now
    kept = spool.recent(0) + spool.recent(1)
    wanted = {b"r%d-%d" % (s, i) for s in range(30) if clock.now - (1000 + s) <= 10.0 for i in range(5)}
    assert wanted <= set(kept)
    assert len(kept) <= len(wanted) + 2 * 2 * 5  # at most a chunk more per shard, either end
    assert spool.recent(0) == sorted(spool.recent(0), key=lambda r: (int(r[1:].split(b"-")[0]), r))
    assert all(int(r[1:].split(b"-")[0]) % 2 == 1 for r in spool.recent(1))
    clock.now += 60.0  # nothing new for a minute: nothing is handed on
    assert spool.recent(0) == [] and spool.recent(1) == []


def test_the_cap_keeps_at_least_the_newest_records() -> None:
    spool = Spool(seconds=300.0, max_records=1000, chunk_records=100)
    for i in range(5000):
        spool.add(b"%d" % i)
    kept = spool.recent()
    assert kept[-1000:] == [b"%d" % i for i in range(4000, 5000)]
    assert 1000 <= len(spool) < 1100 and len(kept) == len(spool)
