"""The app factory: a FastAPI app for admin, health and models, with the OpenAI hot path in front of it.

``create_app(settings)`` returns a plain ASGI callable. Requests to ``/v1/chat/completions`` and
``/v1/completions`` go straight to :class:`HotPath` (no framework routing on the hot path);
everything else, and the lifespan, goes to FastAPI, whose every response gets an ``x-request-id``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from importlib import metadata

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from gateway import errors
from gateway.api import (
    billing_routes,
    dashboard_routes,
    docs_routes,
    health_routes,
    keys_routes,
    metrics_routes,
    models_routes,
    orgs_routes,
    partner_routes,
    plans_routes,
    responses_routes,
    routing_routes,
    usage_routes,
    workers_routes,
)
from gateway.api.openapi_schema import install_openapi
from gateway.api.service_error_handler import install_service_error_handler
from gateway.asgi import Message, Receive, Scope, Send
from gateway.config import Settings
from gateway.front import messages_errors
from gateway.front.chat import ChatCompletions
from gateway.front.completions import Completions
from gateway.front.endpoint import HotPath
from gateway.front.messages import Messages
from gateway.front.messages_count import PATH as COUNT_TOKENS_PATH
from gateway.front.messages_count import CountTokens
from gateway.front.responses import Responses
from gateway.observability.metrics_listener import metrics_listener
from gateway.runtime import Runtime, build_runtime

log = logging.getLogger("gateway")

_LOCATIONS = ("body", "query", "path", "header")  # where FastAPI found a bad value: not part of its name


def _error_response(exc: errors.GatewayError, request: Request | None = None) -> Response:
    """The error in OpenAI's shape, or in Anthropic's for an Anthropic route (messages_errors.wants_anthropic)."""
    if request is not None and messages_errors.wants_anthropic(request.url.path,
                                                               request.headers.get("anthropic-version")):
        return Response(messages_errors.error_body(exc), status_code=exc.status, headers=exc.headers,
                        media_type="application/json")
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.GatewayError)
        return _error_response(exc, request)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = list(first.get("loc", ()))
        loc = ".".join(str(p) for p in (where[1:] if where[:1] and where[0] in _LOCATIONS else where))
        return _error_response(errors.invalid_request(f"{loc or 'body'}: {first.get('msg', 'invalid')}",
                                                      param=loc or None), request)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error_response(errors.GatewayError(exc.status_code, str(exc.detail), code=code), request)

    app.add_exception_handler(errors.GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    install_service_error_handler(app)


class RequestIdMiddleware:
    """Adds ``x-request-id: req_<24 hex>`` (the hot path's form) to every response of the wrapped app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ("req_" + os.urandom(12).hex()).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", request_id)]}
            await send(message)

        await self.app(scope, receive, send_with_id)


class GatewayApp:
    """The ASGI entry point: the hot path first, FastAPI for the rest."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api
        self._rest = RequestIdMiddleware(api)
        self._openai: HotPath | None = None
        self._count_tokens: CountTokens | None = None
        self.metrics_url: str | None = None  # the separate metrics listener's, when configured

    @property
    def runtime(self) -> Runtime:
        return self.api.state.runtime  # type: ignore[no-any-return]

    def attach(self, rt: Runtime) -> None:
        self.api.state.runtime = rt
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._openai is not None and scope["path"] in self._openai.routes:
            await self._openai(scope, receive, send)
            return
        if scope["type"] == "http" and self._count_tokens is not None and scope["path"] == COUNT_TOKENS_PATH:
            await self._count_tokens(scope, receive, send)
            return
        await self._rest(scope, receive, send)


def _version() -> str:
    try:
        return metadata.version("llm-gateway")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def create_app(settings: Settings | None = None) -> GatewayApp:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with build_runtime(settings) as rt, metrics_listener(settings, rt.metrics) as metrics_url:
            gateway.attach(rt)
            if not rt.pool.all() and rt.providers is None:
                log.warning("no worker is configured: set GATEWAY_WORKERS, or add one with `gateway workers add "
                            "URL` or POST /admin/workers; until then /v1 answers 503")
            gateway.metrics_url = metrics_url
            # What exists now (modules, clients, the runtime) lives as long as the server: out of the
            # cyclic collector's sight, full collections under load stop traversing it (~160k objects).
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()

    # docs_url / redoc_url off: FastAPI's own pages load Swagger UI from a CDN; docs_routes serves it offline.
    api = FastAPI(title="LLM gateway", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    _install_error_handlers(api)
    for module in (docs_routes, health_routes, models_routes, metrics_routes, orgs_routes, keys_routes, plans_routes,
                   workers_routes, partner_routes, billing_routes, usage_routes, dashboard_routes, responses_routes,
                   routing_routes):
        api.include_router(module.router)
    install_openapi(api)
    gateway = GatewayApp(api)
    return gateway
