"""The checks Chat Completions and Completions bodies share: JSON object, model, stream, numbers.

The gateway parses a body once and forwards everything it does not use untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway import errors
from gateway.front import json_depth
from gateway.pipeline.request import ParsedRequest

MAX_MODEL_CHARS = 200  # the ledger's column; no served model name comes close


def type_error(param: str, expected: str) -> errors.GatewayError:
    return errors.invalid_request(f"Invalid type for '{param}': expected {expected}.", param=param,
                                  code="invalid_type")


def check_number(body: dict[str, Any], name: str, integer: bool = False, minimum: float | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        raise type_error(name, "an integer" if integer else "a number")
    if minimum is not None and value < minimum:
        raise errors.invalid_request(f"Invalid value for '{name}': must be at least {minimum}.", param=name,
                                     code="invalid_value")


def load_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object the gateway can re-encode; a 400 otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.invalid_json(str(exc)) from None
    if json_depth.too_deep(body, len(raw)):  # a body the gateway could not re-encode (orjson encodes 254 levels)
        raise errors.too_deep(json_depth.MAX_DEPTH)
    if not isinstance(body, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    return body


def parse_body(raw: bytes, kind: str, check: Callable[[dict[str, Any]], None]) -> ParsedRequest:
    """Load ``raw`` as a JSON object, run the protocol's own ``check`` on it and the shared checks."""
    body = load_object(raw)
    model = body.get("model")
    if model is None:
        raise errors.invalid_request("Missing required parameter: 'model'.", param="model",
                                     code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise type_error("model", "a non-empty string")
    if len(model) > MAX_MODEL_CHARS:
        raise errors.invalid_request(f"Invalid value for 'model': at most {MAX_MODEL_CHARS} characters.",
                                     param="model", code="invalid_value")
    check(body)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise type_error("stream", "a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise type_error("stream_options", "an object")
    include_usage = bool(stream and options and options.get("include_usage") is True)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        check_number(body, name, integer=True, minimum=1)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        check_number(body, name)
    return ParsedRequest(kind=kind, body=body, model=model, stream=bool(stream), include_usage=include_usage)
