"""``POST /v1/messages/count_tokens``: the prompt size of a Messages body, without generating anything.

Counted with the gateway's own prompt estimator (``billing.usage_record.estimate_prompt_tokens``, about 4
characters a token plus a few a message: the one that meters prompts whose usage never arrived), over the
translated chat body, plus the tool definitions and tool-call arguments it does not look at. The workers
have no tokenize endpoint to ask. Nothing is forwarded, metered or billed.

Its body is a Messages body without the generation settings, as Anthropic defines it: ``max_tokens``,
``stream``, ``stop_sequences``, ``temperature``, ``top_p``, ``top_k`` and ``metadata`` are refused as
Anthropic refuses them (400 ``invalid_request_error``, ``max_tokens: Extra inputs are not permitted``),
rather than silently ignored.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from billing.usage_record import estimate_prompt_tokens
from gateway import errors
from gateway.asgi import JSON_HEADERS, ClientGone, Receive, Scope, Send, header, read_body, send_response
from gateway.auth import KeyCache
from gateway.front import messages_errors
from gateway.front.endpoint import api_key_from
from gateway.front.messages_request import bad, check_model, to_chat
from gateway.front.openai_body import load_object

PATH = "/v1/messages/count_tokens"
# Fields of a Messages body that count_tokens' body does not have (Anthropic refuses them there).
GENERATION_ONLY = ("max_tokens", "stream", "stop_sequences", "temperature", "top_p", "top_k", "metadata")


def check_count_body(body: dict[str, Any]) -> str:
    """The model of a count_tokens body; a 400 in Anthropic's words for a generation-only field."""
    model = check_model(body)
    for name in GENERATION_ONLY:
        if name in body:
            raise bad(name, "Extra inputs are not permitted")
    return model


def count_tokens(chat: dict[str, Any]) -> int:
    extra = 0
    tools = chat.get("tools")
    if tools:
        extra += len(orjson.dumps(tools))
    for message in chat["messages"]:
        for call in message.get("tool_calls") or ():
            extra += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return estimate_prompt_tokens(chat) + (extra + 3) // 4


class CountTokens:
    """A plain ASGI app for the one route; errors in Anthropic's shape."""

    def __init__(self, keys: KeyCache, max_body_bytes: int) -> None:
        self._keys = keys
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = [(b"x-request-id", b"req_" + os.urandom(12).hex().encode())]
        try:
            if scope["method"] != "POST":
                raise errors.method_not_allowed()
            length = header(scope, b"content-length")
            raw = await read_body(receive, self._max_body, int(length) if length and length.isdigit() else None)
            await self._keys.authenticate(api_key_from(scope))
            body = load_object(raw)
            tokens = count_tokens(to_chat(body, check_count_body(body), None))
        except ClientGone:
            return
        except errors.GatewayError as exc:
            hdrs = JSON_HEADERS + request_id + [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await send_response(send, exc.status, messages_errors.error_body(exc), hdrs)
            return
        await send_response(send, 200, orjson.dumps({"input_tokens": tokens}), JSON_HEADERS + request_id)
