"""Anthropic's error shape, ``{"type": "error", "error": {"type": ..., "message": ...}}``, for every error of
an Anthropic route (``/v1/messages...``, and ``/v1/models`` asked with ``anthropic-version``).

The HTTP status stays the gateway's; the error type is Anthropic's for that status, so the official SDK
raises its matching class (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError,
RequestTooLargeError, RateLimitError, InternalServerError, OverloadedError).
"""

from __future__ import annotations

import orjson

from gateway import errors

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
          529: "overloaded_error"}

ANTHROPIC_PREFIX = "/v1/messages"


def error_type(status: int) -> str:
    known = _TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(exc: errors.GatewayError) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type(exc.status), "message": exc.message}})


def wants_anthropic(path: str, anthropic_version: str | None) -> bool:
    """Whether an error on ``path`` is answered in Anthropic's shape: the Messages routes and anything
    under them, and the model routes when the client sent ``anthropic-version``."""
    if path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/"):
        return True
    return anthropic_version is not None and (path == "/v1/models" or path.startswith("/v1/models/"))
