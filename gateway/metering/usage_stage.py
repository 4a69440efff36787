"""The metering stage: every request's usage record, handed to the durable stream before the
response completes.

``finish`` builds the record (tokens the worker reported, or counted when the usage never arrived;
the served model priced at the plan valid when the request started) and queues one script in the
post-request round trip: XADD to the usage stream on Redis, an append to an in-process queue that the
embedded ledger writer drains. No SQL, and nothing in the pre-request round trip.

A request refused with 429 (a rate limit or a spend cap) generates nothing and is not billed: it is
handed on as a small record of kind "refused", which the writer counts in the hourly rollups
(``rate_limited``) without a ledger row. The stage runs first so that it settles every request, also
those a later stage refused.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from billing.money import PlanBook, Tokens
from billing.usage_record import InvalidUsage, UsageRecord, estimate_prompt_tokens, tokens_from_usage
from gateway.metering.spool import Spool
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.request import ParsedRequest
from gateway.state.base import MemoryData, RoundTrip, Script
from gateway.state.keyspace import KeySpace

log = logging.getLogger("gateway.metering")

_RECORD = "metering.record"
_NONE = object()


_LOCAL_QUEUE = "usage:local-queue"


def _append_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    local_queue(data).append(args[0])  # whichever stream shard KEYS[1] names: one local queue
    return b"%d-0" % now_ms


def local_queue(data: MemoryData) -> deque[bytes | UsageRecord]:
    """The in-process stand-in for every shard of the usage stream (drained by the embedded ledger writer)."""
    holder = data.value(_LOCAL_QUEUE)
    queue = holder.get("q")
    if queue is None:
        queue = holder["q"] = deque()
    return queue


USAGE_APPEND = Script.load("usage_append", _append_py)


class PriceCatalog:
    """The plan book the request path prices with; replaced whole by the periodic refresh."""

    __slots__ = ("book",)

    def __init__(self, book: PlanBook | None = None) -> None:
        self.book = book or PlanBook()


def prompt_estimate(request: ParsedRequest) -> int:
    """The request's prompt estimate: the chat adapter's, counted in its one pass, else counted now."""
    return request.prompt_tokens if request.prompt_tokens is not None else estimate_prompt_tokens(request.body)


def usage_record(ex: Exchange, catalog: PriceCatalog) -> UsageRecord | None:
    """The request's usage record, or None when nothing was generated (not billed). Built once."""
    cached = ex.notes.get(_RECORD, None)
    if cached is not None:
        return None if cached is _NONE else cached
    record = _build(ex, catalog)
    ex.notes[_RECORD] = _NONE if record is None else record
    return record


def _build(ex: Exchange, catalog: PriceCatalog) -> UsageRecord | None:
    if ex.worker is None:
        return None
    tokens: Tokens | None = None
    reported = False
    if ex.usage is not None:
        try:
            tokens = tokens_from_usage(ex.usage)
            reported = True
        except InvalidUsage as exc:  # not believed: counted like a usage that never came
            log.warning("worker %s reported usage no request can have for %s (%s); counting instead",
                        ex.worker.id, ex.request_id, exc)
    if tokens is None:
        if ex.content_events == 0 and ex.usage is None:
            return None
        # The usage never came (stream cut, client gone) or is not believed: count what we saw.
        tokens = Tokens(prompt=prompt_estimate(ex.request), cached=0, output=ex.content_events,
                        reasoning=min(ex.reasoning_events, ex.content_events))
    if tokens.prompt == 0 and tokens.output == 0:
        return None
    model = ex.served_model or ex.request.model
    started = datetime.fromtimestamp(ex.started_wall, UTC)
    charge = catalog.book.charge(ex.principal.org_id, model, started, tokens)
    end = ex.finished_at if ex.finished_at is not None else ex.started
    ttfb = ex.first_byte_at - ex.started if ex.first_byte_at is not None else 0.0
    return UsageRecord(
        request_id=ex.request_id, org_id=ex.principal.org_id, key_id=ex.principal.key_id, model=model,
        requested_model=(ex.requested_model or ex.request.model)[:200], worker=ex.worker.id,
        prompt_tokens=tokens.prompt, cached_tokens=tokens.cached, output_tokens=tokens.output,
        reasoning_tokens=tokens.reasoning,
        list_ticks=charge.list_ticks, billed_ticks=charge.billed_ticks, plan=charge.plan,
        started_at_ms=int(ex.started_wall * 1000), ttfb_ms=int(ttfb * 1000), duration_ms=int((end - ex.started) * 1000),
        status=ex.outcome, http_status=ex.status, reported=reported, stream=ex.request.stream, end_user=ex.end_user,
        app=ex.app,
        provider_cost_ticks=ex.provider_cost_ticks,
    )


def refused_record(ex: Exchange) -> UsageRecord | None:
    """The rollup-only record of a request refused with 429 before it reached a worker, else None."""
    if ex.worker is not None or ex.status != 429 or ex.outcome != "rejected":
        return None
    return UsageRecord(
        request_id=ex.request_id, org_id=ex.principal.org_id, key_id=ex.principal.key_id, model=ex.request.model[:200],
        requested_model=(ex.requested_model or ex.request.model)[:200], worker="", prompt_tokens=0, cached_tokens=0,
        output_tokens=0, reasoning_tokens=0, list_ticks=0, billed_ticks=0, plan="",
        started_at_ms=int(ex.started_wall * 1000),
        ttfb_ms=0, duration_ms=0, status="rate_limited", http_status=429, reported=False, stream=ex.request.stream,
        end_user=ex.end_user, kind="refused", app=ex.app)


class Metering:
    """A Stage: nothing before the upstream call; one XADD in the post-request round trip."""

    def __init__(self, keyspace: KeySpace, catalog: PriceCatalog, shared: bool = True,
                 spool: Spool | None = None, shards: int = 1) -> None:
        self._stream = keyspace.usage_stream()
        # With shards, records take turns (any shard will do: the ledger's insert is idempotent by request id).
        self._streams = keyspace.usage_streams(shards) if shared else [self._stream]
        self._next = 0
        self._catalog = catalog
        self._spool = spool
        # With no shared store the record only goes to the in-process queue: hand over the object
        # (with a store it is encoded, and a trip that falls back to local state carries the bytes).
        self._encode = shared

    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        return None

    def observe(self, ex: Exchange, results: list[Any]) -> None:
        return None

    def admit(self, ex: Exchange, results: list[Any]) -> None:
        return None

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        if ex.resettling:  # the record went to the local queue the first time
            return
        record = usage_record(ex, self._catalog) or refused_record(ex)
        if record is None:
            return
        if not record.refused:
            ex.billed_ticks = record.billed_ticks
        if not self._encode:
            trip.call(USAGE_APPEND, [self._stream], [record])
            return
        raw = record.encode()
        shard = self._next
        self._next = (shard + 1) % len(self._streams)
        if self._spool is not None and not record.refused:
            self._spool.add(raw, shard)
        trip.call(USAGE_APPEND, [self._streams[shard]], [raw])
