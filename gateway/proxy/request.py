"""Parse and check an OpenAI request body once; the gateway forwards everything it does not use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway import errors
from gateway.proxy import nesting

CHAT = "chat"
COMPLETIONS = "completions"


@dataclass(slots=True)
class ParsedRequest:
    kind: str  # CHAT or COMPLETIONS
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool  # what the client asked for


def _type_error(param: str, expected: str) -> errors.GatewayError:
    return errors.invalid_request(f"Invalid type for '{param}': expected {expected}.", param=param,
                                  code="invalid_type")


def _check_number(body: dict[str, Any], name: str, integer: bool = False, minimum: float | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        raise _type_error(name, "an integer" if integer else "a number")
    if minimum is not None and value < minimum:
        raise errors.invalid_request(f"Invalid value for '{name}': must be at least {minimum}.", param=name,
                                     code="invalid_value")


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise errors.invalid_request("Missing required parameter: 'messages'.", param="messages",
                                     code="missing_required_parameter")
    if not isinstance(messages, list):
        raise _type_error("messages", "an array")
    if not messages:
        raise errors.invalid_request("'messages' must contain at least one message.", param="messages",
                                     code="invalid_value")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _type_error(f"messages[{i}]", "an object")
        role = message.get("role")
        if not isinstance(role, str):
            raise errors.invalid_request(f"Missing required parameter: 'messages[{i}].role'.",
                                         param=f"messages[{i}].role", code="missing_required_parameter")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _type_error(f"messages[{i}].content", "a string or an array of content parts")


def _check_prompt(prompt: Any) -> None:
    if prompt is None:
        raise errors.invalid_request("Missing required parameter: 'prompt'.", param="prompt",
                                     code="missing_required_parameter")
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and all(
        isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) or
        (isinstance(p, list) and all(isinstance(t, int) for t in p))
        for p in prompt
    ):
        return
    raise _type_error("prompt", "a string, an array of strings or an array of token ids")


def parse(raw: bytes, kind: str) -> ParsedRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.invalid_json(str(exc)) from None
    if nesting.exceeds(body):  # a body the gateway could not re-encode (orjson encodes 254 levels)
        raise errors.too_deep(nesting.MAX_DEPTH)
    if not isinstance(body, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise errors.invalid_request("Missing required parameter: 'model'.", param="model",
                                     code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _type_error("model", "a non-empty string")
    if kind == CHAT:
        _check_messages(body.get("messages"))
    else:
        _check_prompt(body.get("prompt"))
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _type_error("stream", "a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _type_error("stream_options", "an object")
    include_usage = bool(stream and options and options.get("include_usage") is True)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        _check_number(body, name, integer=True, minimum=1)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _check_number(body, name)
    return ParsedRequest(kind=kind, body=body, model=model, stream=bool(stream), include_usage=include_usage)
