"""Small pure-ASGI helpers for the hot path: read a bounded body, send a whole response."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway import errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    if declared is not None and declared > limit:
        raise errors.body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise errors.body_too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def send_response(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, exc: errors.GatewayError, extra: list[tuple[bytes, bytes]],
                     body: bytes | None = None) -> None:
    """``exc`` as a JSON response: ``body`` when the route's protocol shapes it, else OpenAI's shape."""
    hdrs = JSON_HEADERS + extra + [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    await send_response(send, exc.status, exc.body_bytes() if body is None else body, hdrs)


async def run_until_disconnect(work: Awaitable[None], receive: Receive,
                               responded: Callable[[], bool] | None = None,
                               gone: Callable[[], None] | None = None) -> bool:
    """Run ``work`` while watching the client; cancel it the moment the client disconnects.

    Returns True if ``work`` finished, False if the client went away first. Cancelling ``work``
    closes its upstream connection, so the worker stops generating for a client that is gone.
    Once ``responded()`` is true (the whole answer was sent), a disconnect no longer cancels: what
    is left is settling (leases, reservations, usage), which must complete. uvicorn reports a
    disconnect as soon as a response is complete, so this matters on every request.

    With ``gone``, a disconnect does not cancel ``work`` either: ``gone()`` is called and ``work`` runs
    to its end (what it sends then is dropped by the server); returns False.

    ``work`` runs in the caller's task; one watcher task waits for the disconnect and cancels the caller
    (a task and an ``asyncio.wait`` fewer per request than running both as tasks).
    """
    caller = asyncio.current_task()
    assert caller is not None
    left = False  # the client went away before the answer was complete
    cancelled_here = False

    async def watch() -> None:
        nonlocal left, cancelled_here
        while (await receive())["type"] != "http.disconnect":
            pass
        if responded is not None and responded():
            return
        left = True
        if gone is not None:
            gone()
            return
        cancelled_here = True
        caller.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await work
    except asyncio.CancelledError:
        if cancelled_here and caller.uncancel() == 0:
            return False  # our own cancel, nobody else's: the client left
        raise
    finally:
        watcher.cancel()
    if cancelled_here:  # ``work`` took the cancel and finished anyway: it is spent
        caller.uncancel()
    return not left
