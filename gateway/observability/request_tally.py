"""The request path's counter increments and histogram observations, tallied as plain numbers and
handed to prometheus-client in batches.

prometheus-client takes a lock for every increment and walks a histogram's buckets in Python for
every observation: about 90,000 instructions per request at 1 KB, 6% of the gateway's (callgrind:
``python -m bench.instructions``; with the tally the metrics cost some 20,000). Here an increment is a
dict update and an observation a ``bisect`` into the bucket bounds; ``flush`` adds the totals to the
metrics' children, per label set, once: at every scrape (``GatewayMetrics.exposition``), every
``FLUSH_EVERY`` observations, and once a second from a background task (multiprocess mode keeps each
process's values in its own files, read by whichever process is scraped).

A histogram's batch goes into its child's bucket and sum values, which prometheus-client keeps as
``_buckets`` (one per upper bound, +Inf last, not cumulative) and ``_sum``;
``tests/gateway/test_request_tally.py`` checks that a flushed tally exposes exactly what observing each
value would have.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Histogram

FLUSH_EVERY = 4096  # observations between flushes on the request path (a flush costs ~1 us a label set)


class RequestTally:
    __slots__ = ("_bounds", "_counters", "_counts", "_histograms", "_observations", "_pending")

    def __init__(self, counters: list[Counter], histograms: list[Histogram]) -> None:
        self._counters = counters
        self._histograms = histograms
        self._bounds = [tuple(float(b) for b in h._upper_bounds[:-1]) for h in histograms]  # no +Inf
        self._counts: dict[tuple[int, tuple[str, ...]], float] = {}
        self._observations: dict[tuple[int, tuple[str, ...]], list[float]] = {}  # buckets..., +Inf, sum
        self._pending = 0

    def inc(self, counter: int, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """Add ``amount`` to counter number ``counter`` (its index in the list given) for ``labels``."""
        key = (counter, labels)
        counts = self._counts
        counts[key] = counts.get(key, 0.0) + amount

    def observe(self, histogram: int, labels: tuple[str, ...], value: float) -> None:
        key = (histogram, labels)
        tally = self._observations.get(key)
        if tally is None:
            tally = self._observations[key] = [0.0] * (len(self._bounds[histogram]) + 2)
        tally[bisect_left(self._bounds[histogram], value)] += 1
        tally[-1] += value
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Add what was tallied since the last flush to the metrics."""
        counts, observations = self._counts, self._observations
        self._counts, self._observations, self._pending = {}, {}, 0
        for (index, labels), amount in counts.items():
            metric: Any = self._counters[index]
            (metric.labels(*labels) if labels else metric).inc(amount)
        for (index, labels), tally in observations.items():
            child: Any = self._histograms[index].labels(*labels)
            for bucket, seen in zip(child._buckets, tally, strict=False):
                if seen:
                    bucket.inc(seen)
            child._sum.inc(tally[-1])
