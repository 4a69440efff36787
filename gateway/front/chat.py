"""Front adapter for OpenAI Chat Completions (``POST /v1/chat/completions``): the body is forwarded as is."""

from __future__ import annotations

from typing import Any

from gateway import errors
from gateway.front import chat_scan
from gateway.front.openai_body import parse_body, type_error
from gateway.pipeline.request import CHAT, ParsedRequest


class ChatCompletions:
    path = "/v1/chat/completions"
    kind = CHAT

    def parse(self, raw: bytes) -> ParsedRequest:
        return parse_body(raw, CHAT, _check, chat_scan.scan)

    def error_body(self, exc: errors.GatewayError) -> bytes:
        return exc.body_bytes()


def _check(body: dict[str, Any]) -> None:
    _check_messages(body.get("messages"))


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise errors.invalid_request("Missing required parameter: 'messages'.", param="messages",
                                     code="missing_required_parameter")
    if not isinstance(messages, list):
        raise type_error("messages", "an array")
    if not messages:
        raise errors.invalid_request("'messages' must contain at least one message.", param="messages",
                                     code="invalid_value")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise type_error(f"messages[{i}]", "an object")
        role = message.get("role")
        if not isinstance(role, str):
            raise errors.invalid_request(f"Missing required parameter: 'messages[{i}].role'.",
                                         param=f"messages[{i}].role", code="missing_required_parameter")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise type_error(f"messages[{i}].content", "a string or an array of content parts")
