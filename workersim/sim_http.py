"""The few HTTP helpers the simulator needs: read a bounded body, OpenAI-shaped errors, whole responses.

The ASGI types come from the gateway's one ASGI module (the simulator may import the product; never the
reverse).
"""

from __future__ import annotations

import orjson

from gateway.asgi import Receive, Send

Headers = list[tuple[bytes, bytes]]

JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    413: "BadRequestError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class Disconnected(Exception):
    """The client went away before its request body was read."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; raises ``Disconnected``, or ``ValueError`` past ``limit`` bytes."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ValueError("request body too large")
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


def error_body(status: int, message: str, param: str | None = None, error_type: str | None = None) -> bytes:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``."""
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": error_type or _ERROR_TYPES.get(status, "Error"),
                "param": param,
                "code": status,
            }
        }
    )


async def send_response(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """A complete response with a content-length; ``headers`` are sent first."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
