"""The checks Chat Completions and Completions bodies share: JSON object, model, stream, numbers.

The gateway parses a body once and forwards everything it does not use untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway import errors
from gateway.front import json_depth
from gateway.pipeline.request import ParsedRequest, PromptScan

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


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.invalid_json(str(exc)) from None


def _object(body: Any, size: int) -> dict[str, Any]:
    if json_depth.too_deep(body, size):  # a body the gateway could not re-encode (orjson encodes 254 levels)
        raise errors.too_deep(json_depth.MAX_DEPTH)
    if not isinstance(body, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    return body


def load_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object the gateway can re-encode; a 400 otherwise."""
    return _object(_loads(raw), len(raw))


Scan = Callable[[dict[str, Any]], PromptScan | None]


def parse_body(raw: bytes, kind: str, check: Callable[[dict[str, Any]], None],
               scan: Scan | None = None) -> ParsedRequest:
    """Load ``raw`` as a JSON object, run the protocol's own ``check`` on it and the shared checks.

    ``scan`` (the chat adapter's ``chat_scan.scan``) walks the body once: it raises the nesting error
    itself, and a PromptScan it returns vouches for the nesting bound and for ``check``, which are
    then skipped; where it returns None, both run as they would without it."""
    body = _loads(raw)
    prompt = scan(body) if scan is not None and type(body) is dict else None
    if prompt is None:
        body = _object(body, len(raw))
    model = body.get("model")
    if model is None:
        raise errors.invalid_request("Missing required parameter: 'model'.", param="model",
                                     code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise type_error("model", "a non-empty string")
    if len(model) > MAX_MODEL_CHARS:
        raise errors.invalid_request(f"Invalid value for 'model': at most {MAX_MODEL_CHARS} characters.",
                                     param="model", code="invalid_value")
    if prompt is None:
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
    return ParsedRequest(kind=kind, body=body, model=model, stream=bool(stream), include_usage=include_usage,
                         prompt=prompt, prompt_tokens=prompt.tokens if prompt is not None else None)
