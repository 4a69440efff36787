"""Front adapter for OpenAI Completions (``POST /v1/completions``): the body is forwarded as is."""

from __future__ import annotations

from typing import Any

from gateway import errors
from gateway.front.openai_body import parse_body, type_error
from gateway.pipeline.request import COMPLETIONS, ParsedRequest


class Completions:
    path = "/v1/completions"
    kind = COMPLETIONS

    def parse(self, raw: bytes) -> ParsedRequest:
        return parse_body(raw, COMPLETIONS, _check)

    def error_body(self, exc: errors.GatewayError) -> bytes:
        return exc.body_bytes()


def _check(body: dict[str, Any]) -> None:
    _check_prompt(body.get("prompt"))


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
    raise type_error("prompt", "a string, an array of strings or an array of token ids")
