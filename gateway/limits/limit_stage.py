"""The rate-limit stage: one script call before the upstream call, one after it.

``plan`` queues ``limit_reserve`` for the request's organisation and key in the Forwarder's single
pre-request round trip; ``admit`` turns its answer into the six ``x-ratelimit-*`` headers or a 429;
``finish`` queues ``limit_settle`` in the post-request round trip (release the concurrency lease,
settle the token reservation to the real usage). The limits come with the Principal: no SQL here.

While Redis is unreachable the Forwarder re-plans against this replica's in-process state with
``ex.degraded`` set: a fail-open organisation is then held to ``limit / replicas`` locally, a
fail-closed one gets 503.

Concurrency leases are short (``lease_s``) so that a replica that dies frees its slots soon; while a
request lives, ``renew_leases`` (one task per replica, every ``lease_s / 3``) extends the leases of all its
requests in flight in one pipelined round trip, once any of them is older than ``lease_s / 6`` (a request
shorter than that never costs a renewal). The request path keeps its one round trip before and after.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gateway import errors
from gateway.limits.headers import duration, limit_headers, retry_headers
from gateway.limits.scripts import RENEW, RESERVE, SETTLE, SETTLED_MARKER_MS
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import RateLimits
from gateway.state.base import RoundTrip, StateStore, StoreUnavailable
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState

log = logging.getLogger("gateway.limits")

NOTE = "limits"
# Positions in the 8-limit vector (script argument order).
_NAMES = ("requests per min (RPM)", "tokens per min (TPM)", "tokens per day (TPD)", "concurrent requests")
_REQUESTS, _TOKENS, _DAY, _CONC = 0, 1, 2, 3


@dataclass
class LimitStats:
    """Counters of this replica (exported to Prometheus by the metrics stage, later)."""

    checked: int = 0
    admitted: int = 0
    refused_requests: int = 0
    refused_tokens: int = 0
    refused_concurrency: int = 0
    # Checks answered by the local limiter (fail-open) and 503s (fail-closed) while Redis was down.
    local_fallbacks: int = 0
    refused_unavailable: int = 0
    # Renewal round trips (one a tick for all the leases in flight), leases extended, failed round trips.
    lease_renewal_trips: int = 0
    leases_renewed: int = 0
    lease_renewal_failures: int = 0


@dataclass
class _Held:
    """The concurrency leases of one request in flight on this replica."""

    sets: list[str]  # the lease sets (organisation's, key's) it holds a lease in
    local: bool  # reserved in this replica's own state (Redis was unreachable)
    since: float = field(default_factory=time.monotonic)  # reserved or last renewed (monotonic)


@dataclass
class _Plan:
    index: int
    vector: list[int]
    estimate: int
    keys: list[str]
    closed: bool = False
    reserved: bool = False


def _vector(limits: RateLimits, share: int) -> list[int]:
    values = (limits.org_rpm, limits.org_tpm, limits.org_tpd, limits.org_concurrency,
              limits.key_rpm, limits.key_tpm, limits.key_tpd, limits.key_concurrency)
    return [0 if v is None else max(1, v // share) for v in values]


def estimate_tokens(ex: Exchange, default_max_tokens: int) -> int:
    """Prompt estimate (payload bytes / 4) plus the output the client allows (or the default)."""
    body = ex.request.body
    out = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    n = body.get("n") or 1
    return len(ex.payload) // 4 + int(out) * int(n)


def actual_tokens(ex: Exchange, fallback: int) -> int:
    """Input plus output tokens of the finished request (cached input counts, as with xAI); without a
    usage object, the prompt estimate plus one token per streamed content event."""
    usage = ex.usage
    if usage:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt + completion
    return fallback + ex.content_events


class RateLimitStage:
    def __init__(self, keyspace: KeySpace, *, replicas: int = 1, default_max_tokens: int = 1024,
                 lease_s: float = 30.0) -> None:
        self._keyspace = keyspace
        self._replicas = max(1, replicas)
        self._default_max_tokens = default_max_tokens
        self._lease_ms = int(lease_s * 1000)
        self.renew_interval_s = lease_s / 3
        self._held: dict[str, _Held] = {}  # request id -> its leases, while in flight
        self.stats = LimitStats()

    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        limits = ex.principal.limits
        if limits is None:
            return
        if ex.degraded and not limits.fail_open:
            ex.notes[NOTE] = _Plan(-1, [], 0, [], closed=True)
            return
        p = ex.principal
        keys = [self._keyspace.limit_buckets(p.org_id), self._keyspace.limit_leases(p.org_id),
                self._keyspace.limit_buckets(p.org_id, p.key_id), self._keyspace.limit_leases(p.org_id, p.key_id)]
        vector = _vector(limits, self._replicas if ex.degraded else 1)
        est = estimate_tokens(ex, self._default_max_tokens)
        index = trip.call(RESERVE, keys, [0, ex.request_id, self._lease_ms, est, *vector])
        ex.notes[NOTE] = _Plan(index, vector, est, keys)

    def observe(self, ex: Exchange, results: list[Any]) -> None:
        """The reserve script takes everything or nothing: what it admitted is settled by ``finish``."""
        plan: _Plan | None = ex.notes.get(NOTE)
        if plan is not None and not plan.closed and results[plan.index][0]:
            plan.reserved = True

    def admit(self, ex: Exchange, results: list[Any]) -> None:
        plan: _Plan | None = ex.notes.get(NOTE)
        if plan is None:
            return
        if plan.closed:
            self.stats.refused_unavailable += 1
            raise errors.limits_unavailable()
        self.stats.checked += 1
        if ex.degraded:
            self.stats.local_fallbacks += 1
        result = results[plan.index]  # integers from both stores
        admitted, failed, retry_ms, states = result[0], result[1], result[2], result[3:]
        headers = self._headers(plan.vector, states)
        if admitted:
            plan.reserved = True
            self.stats.admitted += 1
            ex.response_headers.extend(headers)
            sets = [plan.keys[1 + 2 * s] for s in (0, 1) if plan.vector[3 + 4 * s] > 0]
            if sets:
                self._held[ex.request_id] = _Held(sets, ex.degraded)
            return
        raise self._refusal(ex, plan, failed - 1, retry_ms, states, headers)

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        self._held.pop(ex.request_id, None)  # renewed no more: the settling releases it
        plan: _Plan | None = ex.notes.get(NOTE)
        if plan is None or not plan.reserved:
            return
        v = plan.vector
        if not (v[1] or v[2] or v[3] or v[5] or v[6] or v[7]):
            return  # only request counts: nothing to release or settle
        delta = actual_tokens(ex, len(ex.payload) // 4) - plan.estimate
        marker = self._keyspace.limit_settled(ex.principal.org_id, ex.request_id)
        trip.call(SETTLE, [*plan.keys, marker], [0, ex.request_id, delta, *v, SETTLED_MARKER_MS])

    async def renew_leases(self, shared: StateStore, local: MemoryState) -> None:
        """Extend the leases of every request in flight on this replica, once any is older than half the
        renewal interval: per lease set one script call with all its request ids, one round trip per store."""
        now = time.monotonic()
        if not any(now - held.since >= self.renew_interval_s / 2 for held in self._held.values()):
            return
        for store, in_local in ((shared, False), (local, True)):
            members: dict[str, list[str]] = {}
            for request_id, held in self._held.items():
                if held.local == in_local:
                    held.since = now
                    for lease_set in held.sets:
                        members.setdefault(lease_set, []).append(request_id)
            if not members:
                continue
            trip = store.round_trip()
            for lease_set, request_ids in members.items():
                trip.call(RENEW, [lease_set], [0, self._lease_ms, *request_ids])
            try:
                extended = await trip.execute()
            except StoreUnavailable as exc:  # the leases run out unless a later tick gets through
                self.stats.lease_renewal_failures += 1
                log.warning("renewing %d concurrency leases failed: %s", len(members), exc)
                continue
            self.stats.lease_renewal_trips += 1
            self.stats.leases_renewed += sum(int(n) for n in extended)

    @staticmethod
    def _headers(vector: list[int], states: list[int]) -> list[tuple[bytes, bytes]]:
        """The binding (least remaining) request and token limits of the key and the organisation."""
        requests = tokens = None
        for i in (_REQUESTS, 4 + _REQUESTS):
            if vector[i] > 0 and (requests is None or states[2 * i] < requests[1]):
                requests = (vector[i], states[2 * i], states[2 * i + 1])
        for group in ((_TOKENS, 4 + _TOKENS), (_DAY, 4 + _DAY)):
            for i in group:
                if vector[i] > 0 and (tokens is None or states[2 * i] < tokens[1]):
                    tokens = (vector[i], states[2 * i], states[2 * i + 1])
            if tokens is not None:
                break
        return limit_headers(requests, tokens)

    def _refusal(self, ex: Exchange, plan: _Plan, failed: int, retry_ms: int, states: list[int],
                 headers: list[tuple[bytes, bytes]]) -> errors.GatewayError:
        kind = failed % 4
        limit = plan.vector[failed]
        scope = (f"organization {ex.principal.org_name}" if failed < 4 else f"key {ex.principal.key_id}")
        model = ex.request.model
        hdrs = {k.decode(): v.decode() for k, v in headers}
        if kind == _CONC:
            self.stats.refused_concurrency += 1
            in_flight = limit - states[2 * failed]
            hdrs.update(retry_headers(retry_ms))
            return errors.rate_limited(
                "requests", f"Rate limit reached for {model} in {scope} on {_NAMES[kind]}: Limit {limit}, "
                f"In flight {in_flight}. Please try again in {duration(retry_ms)}.", hdrs)
        requested = 1 if kind == _REQUESTS else plan.estimate
        limit_type = "requests" if kind == _REQUESTS else "tokens"
        if kind == _REQUESTS:
            self.stats.refused_requests += 1
        else:
            self.stats.refused_tokens += 1
        if retry_ms < 0:
            return errors.rate_limited(
                limit_type, f"Request too large for {model} in {scope} on {_NAMES[kind]}: Limit {limit}, "
                f"Requested {requested}. The input or output tokens must be reduced in order to run successfully.",
                hdrs)
        used = limit - states[2 * failed]
        hdrs.update(retry_headers(retry_ms))
        return errors.rate_limited(
            limit_type, f"Rate limit reached for {model} in {scope} on {_NAMES[kind]}: Limit {limit}, "
            f"Used {used}, Requested {requested}. Please try again in {duration(retry_ms)}.", hdrs)
