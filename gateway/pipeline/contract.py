"""The steps every request passes through, around the upstream call.

A *stage* (rate limits, spend caps, metering, metrics...) queues its shared-state operations in the
request's single pre-request round trip, may refuse the request once the results are in, may add
fields to what is sent to the worker (``Exchange.set_fields``), and queues its settling in the one
post-request round trip. The *router* queues its lookups in the same pre-request round trip, picks
the worker, and records its choice in the post-request round trip.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from gateway.pipeline.exchange import Exchange
from gateway.routing.pool import Worker
from gateway.state.base import RoundTrip


class Stage(Protocol):
    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue this stage's pre-request state operations (no I/O here)."""

    def admit(self, ex: Exchange, results: list[Any]) -> None:
        """Read the round trip's results; raise ``GatewayError`` to refuse the request."""

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue the settling operations after the request ended, whatever happened (also after a
        refusal by a later stage). Every stage's and the router's settling runs in one round trip."""


class Router(Protocol):
    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue the lookups the choice needs."""

    def observe(self, ex: Exchange, results: list[Any]) -> None:
        """Read the round trip's results before any stage may refuse the request (what was reserved)."""

    def choose(self, ex: Exchange, results: list[Any], candidates: list[Worker],
               exclude: Collection[str]) -> Worker | None:
        """Pick a worker among healthy ``candidates`` not in ``exclude``."""

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue the recording of where the request went and what the worker reported; also called for a
        request that never reached a worker (refused by a stage), to release what ``plan`` reserved."""

    def settled(self, ex: Exchange, results: list[Any]) -> None:
        """Read the post-request round trip's results (counters); no I/O."""
