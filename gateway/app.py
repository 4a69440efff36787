"""The app factory: a FastAPI app for admin, health and models, with the OpenAI hot path in front of it.

``create_app(settings)`` returns a plain ASGI callable. Requests to ``/v1/chat/completions`` and
``/v1/completions`` go straight to :class:`OpenAIEndpoint` (no framework routing on the hot path);
everything else, and the lifespan, goes to FastAPI.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gateway import errors
from gateway.api import admin, admin_billing, admin_limits, dashboard, health, metrics, partner, usage
from gateway.api.openai import ROUTES, OpenAIEndpoint
from gateway.config import Settings
from gateway.observability.metrics_access import metrics_listener
from gateway.proxy.asgi import Receive, Scope, Send
from gateway.runtime import Runtime, build_runtime


def _error_response(exc: errors.GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.GatewayError)
        return _error_response(exc)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error_response(errors.invalid_request(f"{loc or 'body'}: {first.get('msg', 'invalid')}",
                                                      param=loc or None))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error_response(errors.GatewayError(exc.status_code, str(exc.detail), code=code))

    app.add_exception_handler(errors.GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)


class GatewayApp:
    """The ASGI entry point: the hot path first, FastAPI for the rest."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api
        self._openai: OpenAIEndpoint | None = None
        self.metrics_url: str | None = None  # the separate metrics listener's, when configured

    @property
    def runtime(self) -> Runtime:
        return self.api.state.runtime  # type: ignore[no-any-return]

    def attach(self, rt: Runtime) -> None:
        self.api.state.runtime = rt
        self._openai = OpenAIEndpoint(rt.key_cache, rt.forwarder, rt.settings.max_body_bytes, rt.metrics,
                                      rt.request_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ROUTES and self._openai is not None:
            await self._openai(scope, receive, send)
            return
        await self.api(scope, receive, send)


def create_app(settings: Settings | None = None) -> GatewayApp:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with build_runtime(settings) as rt, metrics_listener(settings, rt.metrics) as metrics_url:
            gateway.attach(rt)
            gateway.metrics_url = metrics_url
            # What exists now (modules, clients, the runtime) lives as long as the server: out of the
            # cyclic collector's sight, full collections under load stop traversing it (~160k objects).
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()

    api = FastAPI(title="LLM gateway", version="0.1.0", lifespan=lifespan)
    _install_error_handlers(api)
    api.include_router(health.router)
    api.include_router(metrics.router)
    api.include_router(admin.router)
    api.include_router(admin_limits.router)
    api.include_router(partner.router)
    api.include_router(admin_billing.router)
    api.include_router(usage.router)
    api.include_router(dashboard.router)
    gateway = GatewayApp(api)
    return gateway
