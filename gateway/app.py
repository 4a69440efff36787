"""The app factory: the OpenAI hot path in front of a FastAPI app for admin, health and models.

``create_app(settings)`` returns a plain ASGI callable, which runs the lifespan itself. Requests to the hot
path's routes (``/v1/chat/completions``, ``/v1/completions``, ``/v1/messages``, ``/v1/responses``...) go straight
to :class:`HotPath` (no framework routing on the hot path); ``GET /health`` and ``GET /ready`` are
answered here too; everything else goes to the FastAPI app (``gateway.api.rest_app``), whose every response
gets an ``x-request-id``. That app (FastAPI, pydantic's schemas, the routes: about 300 ms) is built on a
worker thread once the lifespan has started, so the hot path and the probes serve without waiting for it; a
request for it meanwhile waits for the build.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import threading
import traceback
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from gateway import collector
from gateway.asgi import Receive, Scope, Send
from gateway.config import Settings
from gateway.front.chat import ChatCompletions
from gateway.front.completions import Completions
from gateway.front.endpoint import HotPath
from gateway.front.messages import Messages
from gateway.front.messages_count import PATH as COUNT_TOKENS_PATH
from gateway.front.messages_count import CountTokens
from gateway.front.responses import Responses
from gateway.observability.metrics_listener import metrics_listener
from gateway.runtime import Runtime, build_runtime

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.api.rest_app import RequestIdMiddleware

log = logging.getLogger("gateway")

_PROBES = frozenset({"/health", "/ready"})


class GatewayApp:
    """The ASGI entry point: the lifespan and the hot path here, FastAPI (built off the request path) for the rest."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime: Runtime | None = None
        self._rest: RequestIdMiddleware | None = None
        self._rest_lock = threading.Lock()  # the build thread and a synchronous ``api`` never build it twice
        self._rest_build: asyncio.Future[RequestIdMiddleware] | None = None
        self._openai: HotPath | None = None
        self._count_tokens: CountTokens | None = None
        self.metrics_url: str | None = None  # the separate metrics listener's, when configured

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise AttributeError("the gateway's lifespan has not started")
        return self._runtime

    @property
    def api(self) -> FastAPI:
        """The FastAPI app of the non-hot routes (its OpenAPI schema, its routes), built now if not yet."""
        return self._built_rest().app

    def _built_rest(self) -> RequestIdMiddleware:
        with self._rest_lock:
            if self._rest is None:
                from gateway.api.rest_app import build_rest_app

                rest = build_rest_app()
                if self._runtime is not None:
                    rest.app.state.runtime = self._runtime
                self._rest = rest
            return self._rest

    def attach(self, rt: Runtime) -> None:
        self._runtime = rt
        if self._rest is not None:
            self._rest.app.state.runtime = rt
        self._openai = HotPath(
            [ChatCompletions(), Completions(), Messages(), Responses(rt.responses)],
            rt.key_cache,
            rt.forwarder,
            rt.settings.max_body_bytes,
            rt.metrics,
            rt.request_log,
            rt.catalog,
        )
        self._count_tokens = CountTokens(rt.key_cache, rt.settings.max_body_bytes)

    def _start_rest_build(self) -> None:
        """Build the FastAPI app on a worker thread: the event loop serves the hot path meanwhile."""
        if self._rest is None and self._rest_build is None:
            self._rest_build = asyncio.ensure_future(asyncio.to_thread(self._built_rest))
            # Its modules and routes live as long as the server, as what the lifespan froze.
            self._rest_build.add_done_callback(lambda _: gc.freeze())

    async def _rest_app(self) -> RequestIdMiddleware:
        if self._rest is not None:
            return self._rest
        if self._rest_build is None:  # served without our lifespan (lifespan="off")
            return self._built_rest()
        return await asyncio.shield(self._rest_build)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._openai is not None and scope["path"] in self._openai.routes:
            await self._openai(scope, receive, send)
            return
        if scope["type"] == "http" and self._count_tokens is not None and scope["path"] == COUNT_TOKENS_PATH:
            await self._count_tokens(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] in _PROBES and scope["method"] == "GET" and self._runtime:
            await self._probe(scope["path"], send)
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        rest = await self._rest_app()
        await rest(scope, receive, send)

    async def _probe(self, path: str, send: Send) -> None:
        """``GET /health`` and ``GET /ready`` (gateway.api.health_routes documents them), answered here: the
        probes say the hot path serves without waiting for the FastAPI app. Same bodies, same bytes as its
        JSONResponse, an ``x-request-id`` as on every other response."""
        status, body = (200, {"status": "ok"}) if path == "/health" else await self.runtime.readiness()
        payload = json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json"),
            (b"x-request-id", ("req_" + os.urandom(12).hex()).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol, as Starlette's router runs it: a failed start is reported and raised."""
        started = False
        await receive()  # lifespan.startup
        try:
            async with self._serving():
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except BaseException:
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        settings = self.settings
        async with build_runtime(settings) as rt, metrics_listener(settings, rt.metrics) as metrics_url:
            self.attach(rt)
            if not rt.pool.all() and rt.providers is None:
                log.warning("no worker is configured: set GATEWAY_WORKERS, or add one with `gateway workers add "
                            "URL` or POST /admin/workers; until then /v1 answers 503")
            self.metrics_url = metrics_url
            # What exists now (modules, clients, the runtime) lives as long as the server: out of the
            # cyclic collector's sight, full collections under load stop traversing it (~160k objects).
            with collector.long_lived(settings.gc_threshold):
                self._start_rest_build()
                try:
                    yield
                finally:
                    if self._rest_build is not None:
                        await asyncio.gather(self._rest_build, return_exceptions=True)  # a thread is not cancelled


def create_app(settings: Settings | None = None) -> GatewayApp:
    return GatewayApp(settings or Settings())
