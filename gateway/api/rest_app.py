"""The FastAPI app of everything but the hot path: admin, partner, usage, health, models, metrics and docs.

``build_rest_app()`` returns it wrapped in :class:`RequestIdMiddleware` (every response gets an
``x-request-id``). ``gateway.app`` builds it off the request path: FastAPI, pydantic's schemas and the
routes are about 300 ms of imports and class building that the first chat request does not wait for.
"""

from __future__ import annotations

import os
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
from gateway.front import messages_errors

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


def _version() -> str:
    try:
        return metadata.version("llm-gateway")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def build_rest_app() -> RequestIdMiddleware:
    """The FastAPI app (``.app`` of what is returned), without a lifespan: ``gateway.app`` runs the lifespan
    and sets ``state.runtime``."""
    # docs_url / redoc_url off: FastAPI's own pages load Swagger UI from a CDN; docs_routes serves it offline.
    api = FastAPI(title="LLM gateway", version=_version(), docs_url=None, redoc_url=None)
    _install_error_handlers(api)
    for module in (docs_routes, health_routes, models_routes, metrics_routes, orgs_routes, keys_routes, plans_routes,
                   workers_routes, partner_routes, billing_routes, usage_routes, dashboard_routes, responses_routes,
                   routing_routes):
        api.include_router(module.router)
    install_openapi(api)
    return RequestIdMiddleware(api)
