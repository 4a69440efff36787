"""Every error the gateway returns, in OpenAI's shape, defined in one place."""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    """An error with an HTTP status and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code=code, param=param)


def invalid_json(detail: str) -> GatewayError:
    return GatewayError(400, f"We could not parse the JSON body of your request: {detail}",
                        "invalid_request_error", code="invalid_json")


def too_deep(limit: int) -> GatewayError:
    return GatewayError(400, f"The JSON body of your request nests arrays and objects more than {limit} levels deep.",
                        "invalid_request_error", code="invalid_json")


def missing_key() -> GatewayError:
    return GatewayError(
        401,
        "You didn't provide an API key. Provide it as 'Authorization: Bearer YOUR_KEY' or 'x-api-key'.",
        "invalid_request_error",
        code="missing_api_key",
    )


def invalid_key() -> GatewayError:
    return GatewayError(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, message, "permission_error", code="forbidden")


def not_found(message: str, code: str = "not_found") -> GatewayError:
    return GatewayError(404, message, "invalid_request_error", code=code)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or no healthy worker serves it.",
        "invalid_request_error",
        code="model_not_found",
        param="model",
    )


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body exceeds the limit of {limit} bytes.", "invalid_request_error",
                        code="request_too_large")


def request_timeout(part: str) -> GatewayError:
    """408: the request's ``head`` or ``body`` did not arrive in time (the connection is closed)."""
    return GatewayError(408, f"The request {part} did not arrive in time.", "invalid_request_error",
                        code="request_timeout")


def header_too_large(max_bytes: int, max_fields: int) -> GatewayError:
    return GatewayError(431, f"The request head exceeds {max_bytes} bytes or {max_fields} header fields.",
                        "invalid_request_error", code="request_header_fields_too_large")


def too_many_connections() -> GatewayError:
    return GatewayError(503, "The server has too many open connections. Please retry.", "service_unavailable",
                        code="too_many_connections", headers={"retry-after": "1"})


def no_worker(model: str) -> GatewayError:
    return GatewayError(503, f"No healthy worker is available for model `{model}`. Please retry.",
                        "service_unavailable", code="no_worker_available")


def upstream_failed(detail: str) -> GatewayError:
    return GatewayError(502, f"The inference worker failed: {detail}", "upstream_error", code="bad_gateway")


def upstream_timeout() -> GatewayError:
    return GatewayError(504, "The inference worker did not answer in time.", "upstream_error",
                        code="gateway_timeout")


def method_not_allowed() -> GatewayError:
    return GatewayError(405, "Method not allowed.", "invalid_request_error", code="method_not_allowed")


def rate_limited(limit_type: str, message: str, headers: dict[str, str]) -> GatewayError:
    """429 on a rate limit: ``limit_type`` is ``requests`` or ``tokens`` (OpenAI's error types)."""
    return GatewayError(429, message, limit_type, code="rate_limit_exceeded", headers=headers)


def limits_unavailable() -> GatewayError:
    """503 for an organisation whose plan fails closed while the shared rate-limit store is down."""
    return GatewayError(503, "Rate limits cannot be checked right now (the shared store is unreachable) and this "
                        "organisation's plan fails closed. Please retry shortly.", "service_unavailable",
                        code="rate_limits_unavailable", headers={"retry-after": "1"})


def auth_unavailable() -> GatewayError:
    """503 for a key that cannot be verified: the database is unreachable and this replica has no recent
    answer for the key cached."""
    return GatewayError(503, "Your API key cannot be verified right now (the key database is unreachable). "
                        "Please retry shortly.", "service_unavailable", code="auth_unavailable",
                        headers={"retry-after": "1"})


def insufficient_quota(scope: str, used_ticks: int, limit_ticks: int) -> GatewayError:
    """Over a spend cap (OpenAI answers an exhausted balance the same way)."""
    def usd(ticks: int) -> str:  # 1 USD = 10^10 ticks; shown to the cent-hundredth, integers only
        return f"${ticks // 10**10}.{ticks % 10**10 // 10**6:04d}"

    return GatewayError(
        429,
        f"You exceeded your {scope}'s monthly budget ({usd(used_ticks)} of {usd(limit_ticks)} used or "
        "reserved). Raise the budget or wait for the next month.",
        "insufficient_quota",
        code="insufficient_quota",
        # Retrying cannot help until the budget changes: the official SDKs honour this header.
        headers={"x-should-retry": "false"},
    )
