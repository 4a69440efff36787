"""Front adapter for Anthropic's Messages API (``POST /v1/messages``).

The body is checked and translated to Chat Completions (messages_request.py) and that translation is
what the worker gets; routing, limits, budgets and metering see a chat request like any other. The
answer goes back as Anthropic's Message object (messages_reply.py) or its stream of events
(messages_stream.py); every error of the route in Anthropic's shape (messages_errors.py).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from gateway import errors
from gateway.front import messages_errors
from gateway.front.messages_reply import message
from gateway.front.messages_request import check_max_tokens, check_model, shows_thinking, to_chat
from gateway.front.messages_stream import MessagesStream
from gateway.front.openai_body import load_object
from gateway.pipeline.request import CHAT, ParsedRequest
from gateway.pipeline.shaping import StreamShaper


class MessagesShape:
    """One request's answer shape (a ``ReplyShape``): it knows the message id, the model and the stops."""

    __slots__ = ("body", "message_id", "model", "thinking")

    def __init__(self, model: str, body: dict[str, Any], thinking: bool) -> None:
        self.message_id = "msg_" + os.urandom(12).hex()
        self.model = model
        self.body = body
        self.thinking = thinking

    def whole(self, answer: dict[str, Any], raw: bytes, billed_ticks: int | None) -> bytes:
        return message(self.message_id, self.model, answer, self.body.get("stop"), billed_ticks, self.thinking)

    def stream(self) -> StreamShaper:
        return MessagesStream(self.message_id, self.model, self.body, self.thinking)

    def error_body(self, exc: errors.GatewayError) -> bytes:
        return messages_errors.error_body(exc)


class Messages:
    path = messages_errors.ANTHROPIC_PREFIX
    kind = CHAT

    def parse(self, raw: bytes) -> ParsedRequest:
        body = load_object(raw)
        model = check_model(body)
        chat = to_chat(body, model, check_max_tokens(body))
        stream = bool(chat.get("stream"))
        # include_usage: the translated body already asks the worker for the usage chunk.
        return ParsedRequest(kind=CHAT, body=chat, model=model, stream=stream, include_usage=stream,
                             shape=MessagesShape(model, chat, shows_thinking(body)), payload=orjson.dumps(chat))

    def error_body(self, exc: errors.GatewayError) -> bytes:
        return messages_errors.error_body(exc)
