"""The OpenAI-compatible hot path as a plain ASGI app: ``/v1/chat/completions`` and ``/v1/completions``.

Per request: read the bounded body, authenticate from the in-process key cache, parse the JSON
once, forward the original bytes, relay the answer as it arrives. No SQL; no framework routing.
"""

from __future__ import annotations

import logging
import os

from gateway import errors
from gateway.auth import KeyCache
from gateway.proxy.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    run_until_disconnect,
    send_error,
)
from gateway.proxy.exchange import Exchange
from gateway.proxy.forward import Forwarder
from gateway.proxy.request import CHAT, COMPLETIONS, parse

log = logging.getLogger("gateway.api")

ROUTES = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETIONS}


def api_key_from(scope: Scope) -> str | None:
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = header(scope, b"x-api-key")
    return key.decode("latin-1").strip() if key else None


class OpenAIEndpoint:
    def __init__(self, keys: KeyCache, forwarder: Forwarder, max_body_bytes: int) -> None:
        self._keys = keys
        self._forwarder = forwarder
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = "req_" + os.urandom(12).hex()
        rid_header = [(b"x-request-id", request_id.encode())]
        ex: Exchange | None = None
        kind = ROUTES[scope["path"]]
        if scope["method"] != "POST":
            await send_error(send, errors.method_not_allowed(), rid_header)
            return
        try:
            length = header(scope, b"content-length")
            raw = await read_body(receive, self._max_body, int(length) if length and length.isdigit() else None)
            principal = await self._keys.authenticate(api_key_from(scope))
            request = parse(raw, kind)
            ex = Exchange(request_id=request_id, principal=principal, request=request, path=scope["path"],
                          payload=raw,
                          headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
            user = ex.headers.get("x-end-user-id") or request.body.get("user")
            ex.end_user = user[:200] if isinstance(user, str) and user else None
            if request.stream and not request.include_usage:
                # Always meter streams: ask the worker for usage; the SSE tap drops that chunk again.
                options = request.body.get("stream_options") or {}
                ex.set_fields({"stream_options": {**options, "include_usage": True}})
            if not await run_until_disconnect(self._forwarder.forward(ex, send), receive):
                ex.outcome = "client_disconnected"
                log.info("client disconnected from %s; upstream cancelled", request_id)
        except errors.GatewayError as exc:
            # An error after admission still carries the stages' headers (x-ratelimit-*).
            await send_error(send, exc, rid_header + ex.response_headers if ex is not None else rid_header)
        except ClientGone:
            return
