"""A worker's Chat Completions answer as a Responses API ``Response`` object.

``output_items`` turns one chat message (reasoning, text, tool calls) into output items;
``response_object`` wraps them with the request's settings and the usage in the Responses shape
(``input_tokens``, ``input_tokens_details.cached_tokens``, ``output_tokens``,
``output_tokens_details.reasoning_tokens``, and ``cost_in_usd_ticks``: the ledger row's billed cost).
Token counts follow the billing rules (``billing.usage_record.tokens_from_usage``), so what the
client reads is what the ledger holds.
"""

from __future__ import annotations

import os
import time
from typing import Any

from billing.usage_record import InvalidUsage, tokens_from_usage

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


def response_id(request_id: str) -> str:
    """The response's id: the request id's random part, so a response and its ledger row share it."""
    return "resp_" + request_id.removeprefix("req_")


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [], "status": status,
            "content": [{"type": "reasoning_text", "text": text}]}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [text_part(text)] if status == "completed" or text else []}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def output_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The output items of one chat answer's message."""
    items: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        items.append(reasoning_item(new_id("rs"), reasoning))
    content = message.get("content")
    calls = message.get("tool_calls") or []
    if (isinstance(content, str) and content) or not calls:
        items.append(message_item(new_id("msg"), content if isinstance(content, str) else ""))
    for call in calls:
        if not isinstance(call, dict):
            continue
        function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
        items.append(call_item(new_id("fc"), str(call.get("id") or new_id("call")), str(function.get("name") or ""),
                               str(function.get("arguments") or "")))
    return items


def usage_object(usage: dict[str, Any] | None, cost_ticks: int | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    try:
        tokens = tokens_from_usage(usage)
    except InvalidUsage:
        return None
    out: dict[str, Any] = {
        "input_tokens": tokens.prompt, "input_tokens_details": {"cached_tokens": tokens.cached},
        "output_tokens": tokens.output, "output_tokens_details": {"reasoning_tokens": tokens.reasoning},
        "total_tokens": tokens.prompt + tokens.output,
    }
    if cost_ticks is not None:
        out["cost_in_usd_ticks"] = cost_ticks
    return out


def response_object(rid: str, body: dict[str, Any], *, model: str, status: str, output: list[dict[str, Any]],
                    created_at: float, usage: dict[str, Any] | None = None, finish_reason: str | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``Response`` object: ``body`` is the client's Responses request (its settings are echoed)."""
    reason = _INCOMPLETE.get(finish_reason or "")
    if status == "completed" and reason is not None:
        status = "incomplete"
    reasoning = body.get("reasoning") or {}
    text = body.get("text") or {}
    return {
        "id": rid, "object": "response", "created_at": int(created_at), "status": status, "error": error,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": model, "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.get("store", True), "temperature": body.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p"), "truncation": body.get("truncation") or "disabled", "usage": usage,
        "user": body.get("user"), "metadata": body.get("metadata") or {},
        "prompt_cache_key": body.get("prompt_cache_key"),
        "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
    }


def from_chat_answer(rid: str, body: dict[str, Any], answer: dict[str, Any], created_at: float,
                     cost_ticks: int | None) -> dict[str, Any]:
    """The ``Response`` of a whole (non-streamed) chat answer."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    usage = answer.get("usage")
    model = answer.get("model")
    return response_object(
        rid, body, model=model if isinstance(model, str) and model else body["model"], status="completed",
        output=output_items(message), created_at=created_at,
        usage=usage_object(usage if isinstance(usage, dict) else None, cost_ticks),
        finish_reason=choice.get("finish_reason"))
