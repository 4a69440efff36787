"""The routing choice among healthy workers serving the model.

Until prefix-aware routing lands this is least in-flight requests, ties broken in rotation.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from gateway.proxy.exchange import Exchange
from gateway.routing.pool import Worker
from gateway.state.base import RoundTrip


class LeastInflight:
    def __init__(self) -> None:
        self._turn = 0

    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        return None

    def choose(self, ex: Exchange, results: list[Any], candidates: list[Worker],
               exclude: Collection[str]) -> Worker | None:
        best: Worker | None = None
        n = len(candidates)
        if n == 0:
            return None
        self._turn = (self._turn + 1) % n
        for i in range(n):
            w = candidates[(self._turn + i) % n]
            if w.id in exclude:
                continue
            if best is None or w.inflight < best.inflight:
                best = w
        return best

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        return None
