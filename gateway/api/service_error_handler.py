"""The one handler that turns what a service refuses (``gateway.services.service_errors``) into an HTTP
error in OpenAI's shape: routes call the services and let their exceptions through."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.errors import GatewayError
from gateway.services.service_errors import Conflict, InvalidInput, NotConfigured, NotFound, ServiceError

# Most specific first: (kind, HTTP status, OpenAI error type).
_STATUS: tuple[tuple[type[ServiceError], int, str], ...] = (
    (NotFound, 404, "invalid_request_error"),
    (Conflict, 409, "invalid_request_error"),
    (InvalidInput, 400, "invalid_request_error"),
    (NotConfigured, 503, "service_unavailable"),
)


def gateway_error(exc: ServiceError) -> GatewayError:
    """The HTTP error for a service's refusal (an unknown kind of refusal is a 400)."""
    status, kind = next(((s, k) for cls, s, k in _STATUS if isinstance(exc, cls)), (400, "invalid_request_error"))
    return GatewayError(status, exc.message, kind, code=exc.code, param=exc.param)


async def _handle(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ServiceError):  # registered for ServiceError only
        raise exc
    error = gateway_error(exc)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install_service_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _handle)
