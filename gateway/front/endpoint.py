"""The hot path as a plain ASGI app, shared by every front adapter (one per client protocol).

Per request: read the bounded body, authenticate from the in-process key cache, let the route's
adapter parse the body once into the canonical request, forward the original bytes, relay the answer
as it arrives. No SQL; no framework routing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from gateway import errors
from gateway.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    run_until_disconnect,
    send_error,
)
from gateway.auth import KeyCache
from gateway.observability.prometheus import GatewayMetrics
from gateway.observability.requestlog import RequestLog
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal
from gateway.pipeline.request import CHAT, COMPLETIONS, ParsedRequest
from gateway.proxy.forward import Forwarder
from gateway.routing.catalog import ModelCatalog

log = logging.getLogger("gateway.api")

# The worker's route for each kind of canonical request, whichever route the client called (a translated
# Messages or Responses request goes to the worker's chat route).
UPSTREAM_PATHS = {CHAT: "/v1/chat/completions", COMPLETIONS: "/v1/completions"}


class FrontAdapter(Protocol):
    """One client protocol: the route it serves and how its body becomes the canonical request."""

    path: str
    kind: str

    def parse(self, raw: bytes) -> ParsedRequest:
        """Check the body; raise ``GatewayError`` (a 4xx) for anything the protocol does not allow."""
        ...

    def error_body(self, exc: errors.GatewayError) -> bytes:
        """Every error of this route, in the protocol's shape."""
        ...


@runtime_checkable
class Resolver(Protocol):
    """What an adapter whose requests depend on stored state (the Responses API's ``previous_response_id``)
    has besides ``parse``: ``resolve`` completes the parsed request once the caller is known (at most one
    read of the shared store), before the pre-request round trip."""

    async def resolve(self, request: ParsedRequest, principal: Principal, request_id: str) -> ParsedRequest: ...


def api_key_from(scope: Scope) -> str | None:
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = header(scope, b"x-api-key")
    return key.decode("latin-1").strip() if key else None


class HotPath:
    def __init__(self, adapters: Sequence[FrontAdapter], keys: KeyCache, forwarder: Forwarder, max_body_bytes: int,
                 metrics: GatewayMetrics, request_log: RequestLog, catalog: ModelCatalog) -> None:
        self.routes = {a.path: a for a in adapters}
        self._catalog = catalog
        self._resolvers: dict[str, Resolver] = {a.path: a for a in adapters if isinstance(a, Resolver)}
        self._keys = keys
        self._forwarder = forwarder
        self._max_body = max_body_bytes
        self._metrics = metrics
        self._log = request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, started_wall = time.perf_counter(), time.time()
        request_id = "req_" + os.urandom(12).hex()
        adapter = self.routes[scope["path"]]
        route = adapter.kind
        ex: Exchange | None = None
        status, error_code = 200, None
        try:
            ex = await self._serve(scope, receive, send, request_id, adapter, started, started_wall)
            if ex is not None:
                status = ex.status or 200
        except errors.GatewayError as exc:
            status, error_code = exc.status, exc.code
            await send_error(send, exc, [(b"x-request-id", request_id.encode())], adapter.error_body(exc))
        except ClientGone:
            status, error_code = 499, "client_disconnected"
        elapsed = time.perf_counter() - started
        model = ex.request.model if ex is not None else ""
        if ex is not None and ex.outcome == "client_disconnected":
            status = 499
        self._metrics.observe(route, status, model, elapsed, ex)
        self._log.write(request_id, route, status, elapsed, ex, error_code)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, request_id: str,
                     adapter: FrontAdapter, started: float, started_wall: float) -> Exchange | None:
        if scope["method"] != "POST":
            raise errors.method_not_allowed()
        ex: Exchange | None = None
        try:
            length = header(scope, b"content-length")
            raw = await read_body(receive, self._max_body, int(length) if length and length.isdigit() else None)
            principal = await self._keys.authenticate(api_key_from(scope))
            request = adapter.parse(raw)
            resolver = self._resolvers.get(adapter.path)
            if resolver is not None:
                request = await resolver.resolve(request, principal, request_id)
            ex = Exchange(request_id=request_id, principal=principal, request=request, started=started,
                          started_wall=started_wall,
                          path=UPSTREAM_PATHS.get(request.kind) or scope["path"],
                          payload=raw if request.payload is None else request.payload,
                          headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
            user = ex.headers.get("x-end-user-id") or request.body.get("user")
            ex.end_user = user[:200] if isinstance(user, str) and user else None
            app = ex.headers.get("x-title") or ex.headers.get("http-referer")  # OpenRouter's convention
            if app:
                ex.app = app[:200]
            self._catalog.admit(ex)
            if request.stream and not request.include_usage:
                # Always meter streams: ask the worker for usage; the SSE tap drops that chunk again.
                options = request.body.get("stream_options") or {}
                ex.set_fields({"stream_options": {**options, "include_usage": True}})
            current = ex

            def gone() -> None:
                current.outcome = "client_disconnected"

            # A stream is cancelled upstream the moment its client leaves, and billed for what was relayed.
            # A non-streaming answer is generated whole before its first byte: the worker's work is done
            # either way, so it runs to its end and is billed from the worker's usage, as OpenAI bills it.
            if not await run_until_disconnect(self._forwarder.forward(ex, send), receive,
                                              lambda: current.responded, None if request.stream else gone):
                ex.outcome = "client_disconnected"
                log.info("client disconnected from %s%s", request_id,
                         "; upstream cancelled" if request.stream else "; the answer is completed and billed")
        except errors.GatewayError as exc:
            if ex is not None:  # the failure is recorded with the exchange's details
                ex.status = exc.status
                # An error after admission still carries the stages' headers (x-ratelimit-*).
                await send_error(send, exc, [(b"x-request-id", request_id.encode()), *ex.response_headers],
                                 adapter.error_body(exc))
                return ex
            raise
        return ex
