"""Forward one request to a worker and relay the answer, unbuffered.

Order of work: every stage and the router queue their shared-state operations in one round trip
(one Redis call); stages admit or refuse; the router picks a worker; the body goes out; the answer
is relayed as it arrives; stages settle in the end.

Retry rule: if the worker could not take the request (no connection, a dropped connection, no answer
or no first stream byte in time) or answers 5xx before any byte went to the client, try once more, on
another worker when there is one; after the first byte, never. ``relay.py`` passes the answer on.

Hosted providers (``upstream/provider_fleet.py``): when no worker of the model is healthy (fallback), every
one is saturated (overflow, for models that allow it) or every worker try failed before a byte went out,
the request goes to the first provider of the model's list whose circuit is closed, then the next, within
the retry budget, unless the caller's organisation keeps its traffic in the fleet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from gateway import errors
from gateway.asgi import Send
from gateway.pipeline.contract import Misconfigured, Retryable, Router, Stage, Upstream
from gateway.pipeline.exchange import Exchange, Target
from gateway.pipeline.request import CHAT
from gateway.proxy.relay import Relay
from gateway.routing.pool import WorkerPool
from gateway.routing.worker import Worker
from gateway.state.base import RoundTrip, Script, StateStore, StoreUnavailable
from gateway.state.memory import MemoryState
from gateway.upstream.provider import PROVIDER_NOTE, ProviderFailure, failure_kind, final_error
from gateway.upstream.provider_fleet import FALLBACK, OVERFLOW, ModelRoute, ProviderFleet

log = logging.getLogger("gateway.proxy")

_MAX_ATTEMPTS = 2
_MAX_UNSETTLED = 10_000  # recorded settlings kept while Redis is away (a few KB each); beyond it leases and
# reservations expire on their own (GATEWAY_LIMITS_LEASE_S, GATEWAY_BUDGET_RESERVATION_TTL_S)


class _Recorder:
    """A round trip that only records its calls, to run them later on another store."""

    def __init__(self) -> None:
        self.calls: list[tuple[Script, Sequence[str], Sequence[Any]]] = []

    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> int:
        self.calls.append((script, list(keys), list(args)))
        return len(self.calls) - 1

    async def execute(self) -> list[Any]:
        raise NotImplementedError("a recorder only records")


class Forwarder:
    def __init__(self, upstream: Upstream[Worker], relay: Relay, pool: WorkerPool, router: Router[Worker],
                 stages: Sequence[Stage], state: StateStore, fallback: MemoryState,
                 providers: ProviderFleet | None = None) -> None:
        self._upstream = upstream
        self._providers = providers
        self._relay = relay
        self._pool = pool
        self._router = router
        self._stages = list(stages)
        self._state = state
        self._fallback = fallback
        # Requests settled locally because the shared store did not answer (see settle_later).
        self._unsettled: deque[list[tuple[Script, Sequence[str], Sequence[Any]]]] = deque()

    async def forward(self, ex: Exchange, send: Send) -> None:
        try:
            results = await self._round_trip(ex)
            self._router.observe(ex, results)
            for stage in self._stages:  # what was reserved, before a refusal may skip the rest
                stage.observe(ex, results)
            for stage in self._stages:
                stage.admit(ex, results)
            await self._dispatch(ex, results, send)
        except errors.GatewayError as exc:
            ex.status = exc.status
            if ex.outcome == "ok":
                ex.outcome = "rejected" if ex.worker is None else "upstream_error"
            raise
        except asyncio.CancelledError:
            if ex.outcome == "ok":
                ex.outcome = "client_disconnected"
            raise
        finally:
            if ex.finished_at is None:
                ex.finished_at = time.perf_counter()
            if not ex.settled:
                await self._settle(ex)

    async def _round_trip(self, ex: Exchange) -> list[Any]:
        trip = self._state.round_trip()
        for stage in self._stages:
            stage.plan(ex, trip)
        self._router.plan(ex, trip)
        try:
            return await trip.execute()
        except StoreUnavailable as exc:
            # Keep serving from this replica's own state; stages that must fail closed see ex.degraded.
            log.warning("shared state unreachable, using local state: %s", exc)
            ex.degraded = True
            local = self._fallback.round_trip()
            for stage in self._stages:
                stage.plan(ex, local)
            self._router.plan(ex, local)
            return await local.execute()

    async def _settle(self, ex: Exchange) -> None:
        """One round trip after the response: the router's record and every stage's settling.

        A relayed answer settles just before its last message goes out, so that what the stages hand
        on (the usage record) is stored before the client holds a complete response."""
        ex.settled = True
        if ex.degraded:  # the reserve may have reached Redis although its reply did not: release it there too
            self._settle_later(ex)
        stores: list[StateStore | MemoryState] = [self._fallback] if ex.degraded else [self._state, self._state]
        results: list[Any] | None = None
        for store in stores:
            trip = self._settle_trip(ex, store)
            try:
                results = await trip.execute()
                break
            except StoreUnavailable as exc:
                # Once more on a fresh connection (a dropped one is often all it was): a lost settling
                # would hold concurrency leases in Redis until they expire.
                log.warning("shared state unreachable while settling %s: %s", ex.request_id, exc)
        if results is None:
            log.warning("settling %s locally; its shared reservations are released once Redis answers",
                        ex.request_id)
            results = await self._settle_trip(ex, self._fallback).execute()
            self._router.settled(ex, results)
            self._settle_later(ex)
            return
        self._router.settled(ex, results)

    async def settle_later(self) -> int:
        """Settle on the shared store what had to be settled locally while it did not answer: the leases
        and reservations the pre-request round trip took there (also one whose reply was lost, which was
        then served from local state). Settling is idempotent per request id,
        so one that did reach Redis before its reply was lost changes nothing. The usage records already
        went to the local queue and are not handed on again. Returns how many were settled."""
        done = 0
        while self._unsettled and self._state.shared:
            batch = [self._unsettled.popleft() for _ in range(min(len(self._unsettled), 500))]
            trip = self._state.round_trip()
            for calls in batch:
                for script, keys, args in calls:
                    trip.call(script, keys, args)
            try:
                await trip.execute()
            except StoreUnavailable:  # still away: keep them for the next try
                self._unsettled.extendleft(reversed(batch))
                break
            done += len(batch)
        if done:
            log.info("settled %d requests on the shared store that had been settled locally", done)
        return done

    def _settle_later(self, ex: Exchange) -> None:
        """Keep the request's settling calls (not the request) for ``settle_later``; the usage record is
        not among them: it went to the local queue."""
        if len(self._unsettled) >= _MAX_UNSETTLED:
            return
        recorder = _Recorder()
        ex.resettling = True
        self._finish(ex, recorder)
        ex.resettling = False
        self._unsettled.append(recorder.calls)

    def _settle_trip(self, ex: Exchange, store: StateStore | MemoryState) -> RoundTrip:
        trip = store.round_trip()
        self._finish(ex, trip)
        return trip

    def _finish(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue the router's and every stage's settling of ``ex`` in ``trip``."""
        self._router.finish(ex, trip)
        for stage in self._stages:
            stage.finish(ex, trip)

    async def _dispatch(self, ex: Exchange, results: list[Any], send: Send) -> None:
        model = ex.request.model
        hosted = self._hosted(ex)
        candidates = self._pool.candidates(model)
        if hosted is not None:
            if not candidates:
                return await self._to_providers(ex, hosted, FALLBACK, send)
            if hosted.spec.overflow and self._saturated(candidates):
                return await self._to_providers(ex, hosted, OVERFLOW, send)
        tried: list[str] = []
        failure: Retryable | None = None
        for attempt in range(_MAX_ATTEMPTS):
            if attempt:
                candidates = self._pool.candidates(model)
            if (not candidates and not tried and model not in self._pool.known_models()
                    and not (self._providers is not None and self._providers.knows(model))):
                raise errors.model_not_found(model)
            worker = self._router.choose(ex, results, candidates, tried)
            if worker is None and failure is not None and not failure.mark_failed and ex.worker is not None:
                worker = self._pool.get(ex.worker.id)  # a dropped connection: the same worker, a new connection
            if worker is None:
                break
            tried.append(worker.id)
            ex.worker = worker
            ex.attempts += 1
            worker.inflight += 1
            try:
                failure = await self._attempt(ex, self._upstream, worker, send)
            finally:
                worker.inflight -= 1
            if failure is None:
                return
            log.warning("worker %s could not take %s: %s", worker.id, ex.request_id, failure.reason)
            if isinstance(failure, Misconfigured):
                self._pool.mark_misconfigured(worker, failure.reason)
            elif failure.mark_failed:
                self._pool.mark_failed(worker, failure.reason)
        if hosted is not None:  # every worker try failed before a byte went out
            return await self._to_providers(ex, hosted, FALLBACK, send)
        ex.outcome = "upstream_error"
        if failure is not None:
            raise errors.upstream_failed(failure.reason)
        raise errors.no_worker(model)

    def _hosted(self, ex: Exchange) -> ModelRoute | None:
        """The model's providers, when this request may go to them (Chat Completions bodies: also those a front
        adapter translated; not /v1/completions)."""
        if self._providers is None or ex.request.kind != CHAT:
            return None
        return self._providers.route(ex.request.model, ex.principal)

    def _saturated(self, candidates: list[Worker]) -> bool:
        assert self._providers is not None
        limit = self._providers.overflow_waiting
        return all(w.metrics.get("waiting", 0.0) >= limit for w in candidates)

    async def _to_providers(self, ex: Exchange, route: ModelRoute, reason: str, send: Send) -> None:
        """The first provider of the model's list that takes the request, in order; breakers and the retry
        budget decide which are tried. Raises the last failure's error in its class when none did."""
        fleet = self._providers
        assert fleet is not None
        fleet.budget.deposit()
        failure: Retryable | None = None
        tried = 0
        for target in route.targets:
            health = target.health
            if not health.breaker.allow():
                health.count_error("circuit_open")
                if failure is None:
                    failure = ProviderFailure(f"{target.label}: circuit open", "circuit_open",
                                              health.breaker.retry_after())
                continue
            if tried and not fleet.budget.withdraw():
                log.warning("retry budget exhausted: %s not tried on %s", ex.request_id, target.label)
                break
            tried += 1
            ex.worker = target
            ex.attempts += 1
            ex.notes[PROVIDER_NOTE] = (target.label, reason)
            verdict = False
            try:
                failure = await self._attempt(ex, fleet.upstream, target, send)
                verdict = True
            finally:
                if not verdict:  # the client's bad request, or the client left: nothing about the provider
                    health.breaker.release()
            if failure is None:
                if ex.outcome == "upstream_cut":
                    health.count_error("cut")
                    health.breaker.failure()
                    health.count_request(reason, "cut")
                else:
                    health.breaker.success()
                    health.count_request(reason, "ok")
                return
            health.count_error(failure_kind(failure))
            health.count_request(reason, "error")
            health.breaker.failure()
            log.warning("provider %s could not take %s: %s", target.label, ex.request_id, failure.reason)
        ex.outcome = "upstream_error"
        raise final_error(failure)

    async def _attempt(self, ex: Exchange, upstream: Upstream[Any], worker: Target, send: Send) -> Retryable | None:
        """Relay one try; returns why it failed when nothing reached the client and another try may help."""
        if ex.upstream_started_at is None:
            ex.upstream_started_at = time.perf_counter()
        try:
            reply = await upstream.open(ex, worker)
        except Retryable as exc:
            return exc
        complete = False
        try:
            if reply.status >= 500:
                detail = (await reply.body(4096))[:200].decode(errors="replace")
                log.warning("worker %s answered %s: %s", worker.id, reply.status, detail)
                complete = True
                return Retryable(f"worker answered {reply.status}", mark_failed=False)
            ex.status = reply.status
            extra = [(b"x-request-id", ex.request_id.encode()), (b"x-gateway-worker", worker.id.encode()),
                     *ex.response_headers]

            async def settle() -> None:
                await self._settle(ex)

            if ex.request.stream and reply.status == 200:
                complete = await self._relay.stream(ex, reply, send, extra, settle)
            else:
                await self._relay.whole(ex, reply, send, extra, settle)
                complete = True
            return None
        except Retryable as exc:
            return exc
        finally:
            ex.finished_at = time.perf_counter()
            reply.close(complete)
