"""Forward one request to a worker and relay the answer, unbuffered.

Order of work: every stage and the router queue their shared-state operations in one round trip
(one Redis call); stages admit or refuse; the router picks a worker; the body goes out; the answer
is relayed as it arrives; stages settle in the end.

Retry rule: if connecting fails or the worker answers 5xx before any byte went to the client, try
once more on another worker; after the first byte, never. A stream cut by the worker ends with an
OpenAI-shaped error event so the client's SDK raises instead of taking a truncated answer as whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from gateway import errors
from gateway.asgi import Send
from gateway.pipeline.contract import Router, Stage
from gateway.pipeline.exchange import Exchange
from gateway.proxy.sse_tap import SseTap
from gateway.routing.pool import WorkerPool
from gateway.routing.worker import Worker
from gateway.state.base import RoundTrip, StateStore, StoreUnavailable
from gateway.state.memory import MemoryState
from gateway.upstream.openai_worker import CONNECT_ERRORS

log = logging.getLogger("gateway.proxy")

_MAX_ATTEMPTS = 2
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]
_DONE = b"data: [DONE]"


class Forwarder:
    def __init__(self, session: aiohttp.ClientSession, pool: WorkerPool, router: Router[Worker],
                 stages: Sequence[Stage], state: StateStore, fallback: MemoryState) -> None:
        self._session = session
        self._pool = pool
        self._router = router
        self._stages = list(stages)
        self._state = state
        self._fallback = fallback

    async def forward(self, ex: Exchange, send: Send) -> None:
        admitted: list[Stage] = []
        try:
            results = await self._round_trip(ex)
            self._router.observe(ex, results)
            for stage in self._stages:
                admitted.append(stage)
                stage.admit(ex, results)
            await self._dispatch(ex, results, send, admitted)
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
                await self._settle(ex, admitted)

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

    async def _settle(self, ex: Exchange, admitted: list[Stage]) -> None:
        """One round trip after the response: the router's record and every admitted stage's settling.

        A relayed answer settles just before its last message goes out, so that what the stages hand
        on (the usage record) is stored before the client holds a complete response."""
        ex.settled = True
        stores: list[StateStore | MemoryState] = [self._fallback] if ex.degraded else [self._state, self._state]
        results: list[Any] | None = None
        for store in stores:
            trip = self._settle_trip(ex, admitted, store)
            try:
                results = await trip.execute()
                break
            except StoreUnavailable as exc:
                # Once more on a fresh connection (a dropped one is often all it was): a lost settling
                # would hold concurrency leases in Redis until they expire.
                log.warning("shared state unreachable while settling %s: %s", ex.request_id, exc)
        if results is None:
            log.warning("settling %s locally", ex.request_id)
            results = await self._settle_trip(ex, admitted, self._fallback).execute()
        self._router.settled(ex, results)

    def _settle_trip(self, ex: Exchange, admitted: list[Stage], store: StateStore | MemoryState) -> RoundTrip:
        trip = store.round_trip()
        self._router.finish(ex, trip)
        for stage in admitted:
            stage.finish(ex, trip)
        return trip

    async def _dispatch(self, ex: Exchange, results: list[Any], send: Send, admitted: list[Stage]) -> None:
        model = ex.request.model
        tried: list[str] = []
        failure: errors.GatewayError | None = None
        for _ in range(_MAX_ATTEMPTS):
            candidates = self._pool.candidates(model)
            if not candidates and not tried and model not in self._pool.known_models():
                raise errors.model_not_found(model)
            worker = self._router.choose(ex, results, candidates, tried)
            if worker is None:
                break
            tried.append(worker.id)
            ex.worker = worker
            ex.attempts += 1
            worker.inflight += 1
            try:
                failure = await self._attempt(ex, worker, send, admitted)
            finally:
                worker.inflight -= 1
            if failure is None:
                return
        ex.outcome = "upstream_error"
        raise failure or errors.no_worker(model)

    async def _attempt(self, ex: Exchange, worker: Worker, send: Send,
                       admitted: list[Stage]) -> errors.GatewayError | None:
        """Relay one try; returns an error (nothing sent to the client) when another try may help."""
        headers = {"Content-Type": "application/json", "x-request-id": ex.request_id}
        if ex.upstream_started_at is None:
            ex.upstream_started_at = time.perf_counter()
        try:
            resp = await self._session.post(worker.url + ex.path, data=ex.payload, headers=headers)
        except aiohttp.ServerTimeoutError as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                self._pool.mark_failed(worker, "connect timeout")
                return errors.upstream_failed("connect timeout")
            raise errors.upstream_timeout() from None
        except CONNECT_ERRORS as exc:
            self._pool.mark_failed(worker, f"connect failed: {exc.__class__.__name__}")
            return errors.upstream_failed(f"could not connect ({exc.__class__.__name__})")
        complete = False
        try:
            if resp.status >= 500:
                detail = (await resp.read())[:200].decode(errors="replace")
                log.warning("worker %s answered %s: %s", worker.id, resp.status, detail)
                complete = True
                return errors.upstream_failed(f"worker answered {resp.status}")
            ex.status = resp.status
            extra = [(b"x-request-id", ex.request_id.encode()), (b"x-gateway-worker", worker.id.encode()),
                     *ex.response_headers]
            if ex.request.stream and resp.status == 200:
                complete = await self._relay_stream(ex, resp, send, extra, admitted)
            else:
                complete = await self._relay_whole(ex, resp, send, extra, admitted)
            return None
        finally:
            ex.finished_at = time.perf_counter()
            if complete:
                resp.release()
            else:
                resp.close()  # drop the connection: the worker sees the cancel

    async def _relay_whole(self, ex: Exchange, resp: aiohttp.ClientResponse, send: Send,
                           extra: list[tuple[bytes, bytes]], admitted: list[Stage]) -> bool:
        try:
            body = await resp.read()
        except CONNECT_ERRORS as exc:
            raise errors.upstream_failed(f"connection lost ({exc.__class__.__name__})") from None
        ex.first_byte_at = time.perf_counter()
        if resp.status == 200:
            try:
                parsed = orjson.loads(body)
                usage = parsed.get("usage") if isinstance(parsed, dict) else None
                ex.usage = usage if isinstance(usage, dict) else None
                model = parsed.get("model") if isinstance(parsed, dict) else None
                ex.served_model = model[:200] if isinstance(model, str) and model else None
            except orjson.JSONDecodeError:
                log.warning("worker %s sent a body that is not JSON", resp.url.host)
        ctype = resp.headers.get("Content-Type", "application/json").encode()
        ex.finished_at = time.perf_counter()
        await asyncio.shield(self._settle(ex, admitted))  # a client leaving now must not lose it
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        ex.responded = True
        ex.bytes_sent = len(body)
        return True

    async def _relay_stream(self, ex: Exchange, resp: aiohttp.ClientResponse, send: Send,
                            extra: list[tuple[bytes, bytes]], admitted: list[Stage]) -> bool:
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *extra]})
        tap = SseTap(drop_usage_event=not ex.request.include_usage)
        tail = b""
        cut: str | None = None
        try:
            async for chunk in resp.content.iter_any():
                if ex.first_byte_at is None:
                    ex.first_byte_at = time.perf_counter()
                out = tap.feed(chunk)
                tail = (tail + chunk)[-64:]
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    ex.bytes_sent += len(out)
        except CONNECT_ERRORS as exc:
            cut = exc.__class__.__name__
        finally:
            ex.usage = tap.usage
            ex.content_events = tap.content_events
            ex.reasoning_events = tap.reasoning_events
            ex.served_model = tap.model
        if cut is None and _DONE not in tail:
            cut = "stream ended without [DONE]"
        if cut is not None:
            ex.outcome = "upstream_cut"
            log.warning("stream %s from worker %s cut: %s", ex.request_id, resp.url.host, cut)
            event = errors.upstream_failed(f"the stream was interrupted ({cut})").body_bytes()
            ex.finished_at = time.perf_counter()
            await asyncio.shield(self._settle(ex, admitted))
            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": False})
            ex.responded = True
            return False
        ex.finished_at = time.perf_counter()
        await asyncio.shield(self._settle(ex, admitted))  # a client leaving now must not lose it
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        ex.responded = True
        return True
