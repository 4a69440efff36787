"""A worker's Chat Completions answer as Anthropic's Message object, and usage in Anthropic's disjoint fields.

Anthropic counts input tokens disjointly: ``input_tokens`` are the ones not read from the cache,
``cache_read_input_tokens`` the cached ones, ``cache_creation_input_tokens`` what was written to a cache
(our workers' prefix cache is automatic and reports none: 0). ``cost_in_usd_ticks`` is the ledger's billed
cost of the request (1 tick = 1e-10 USD).
"""

from __future__ import annotations

from typing import Any

import orjson

from billing.money import Tokens
from billing.usage_record import InvalidUsage, tokens_from_usage

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}


def tokens_of(usage: Any) -> Tokens:
    if not isinstance(usage, dict):
        return Tokens(prompt=0, cached=0, output=0, reasoning=0)
    try:
        return tokens_from_usage(usage)
    except InvalidUsage:  # the ledger does not believe it either; show nothing rather than it
        return Tokens(prompt=0, cached=0, output=0, reasoning=0)


def anthropic_usage(usage: Any, billed_ticks: int | None) -> dict[str, Any]:
    t = tokens_of(usage)
    out: dict[str, Any] = {"input_tokens": t.prompt - t.cached, "cache_creation_input_tokens": 0,
                           "cache_read_input_tokens": t.cached, "output_tokens": t.output}
    if billed_ticks is not None:
        out["cost_in_usd_ticks"] = billed_ticks
    return out


def stop_reason(finish_reason: Any, matched: Any, stops: Any) -> tuple[str | None, str | None]:
    """Anthropic's ``(stop_reason, stop_sequence)`` for a chat ``finish_reason``; vLLM names the stop string
    that ended the answer in the choice's ``stop_reason``."""
    if finish_reason is None:
        return None, None
    if finish_reason == "stop" and isinstance(matched, str) and isinstance(stops, list) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASONS.get(finish_reason, "end_turn"), None


def parse_arguments(arguments: Any) -> Any:
    """A tool call's JSON arguments as the ``input`` object Anthropic returns ({} when they do not parse)."""
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def reasoning_of(fields: dict[str, Any]) -> Any:
    """A message's or a delta's reasoning text (vLLM: ``reasoning_content``; newer: ``reasoning``)."""
    text = fields.get("reasoning_content")
    return text if text is not None else fields.get("reasoning")


def message(message_id: str, model: str, answer: dict[str, Any], stops: Any, billed_ticks: int | None,
            thinking: bool = False) -> bytes:
    """The Message object for a whole chat ``answer`` (first choice); with ``thinking``, the worker's
    reasoning as a ``thinking`` block first (with no signature: the gateway signs nothing)."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = reasoning_of(msg) if thinking else None
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = msg.get("content")
    calls = msg.get("tool_calls")
    calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    if isinstance(text, str) and (text or not calls):
        content.append({"type": "text", "text": text})
    for call in calls:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        content.append({"type": "tool_use", "id": str(call.get("id") or ""), "name": str(function.get("name") or ""),
                        "input": parse_arguments(function.get("arguments"))})
    reason, sequence = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"), stops)
    served = answer.get("model")
    return orjson.dumps({
        "id": message_id, "type": "message", "role": "assistant",
        "model": served if isinstance(served, str) and served else model, "content": content,
        "stop_reason": reason, "stop_sequence": sequence,
        "usage": anthropic_usage(answer.get("usage"), billed_ticks),
    })
