"""The usage spool's memory per record is the record's size, not its encoder's buffer (counted with
tracemalloc, never timed)."""

from __future__ import annotations

import tracemalloc

from gateway.metering.spool import Spool
from tests.billing.conftest import make_record


def test_a_spooled_record_costs_about_its_own_size() -> None:
    spool = Spool(seconds=300.0, max_records=10_000)
    records = [make_record("org-spool", i) for i in range(2000)]
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
    assert grown / 2000 < 2 * size + 200, (grown / 2000, size)
