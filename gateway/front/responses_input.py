"""A Responses API body (``POST /v1/responses``) checked and translated into a Chat Completions body.

The workers speak Chat Completions only. ``check_body`` validates the client's body (every refusal a
400 naming the offending ``param``) and normalises its ``input`` into a list of items; ``chat_body``
turns the conversation (the stored items of a ``previous_response_id`` chain, then this request's) into
the chat body the worker gets. The translation is deterministic: the same items always give the same
messages, so a conversation continued by ``previous_response_id`` grows the same prefix as one resent
whole, and the router and the worker's prefix cache see one growing conversation either way.

Items: ``message`` (roles user, assistant, system, developer; content a string or input/output text and
image parts), ``function_call`` (joins the assistant message before it, as the worker produced it),
``function_call_output`` (a ``tool`` message; its ``call_id`` must answer an earlier ``function_call``)
and ``reasoning`` (kept in the conversation, not sent back: chat workers take no reasoning as input).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway import errors
from gateway.front.openai_body import type_error

# What the request may carry. Accepted and not forwarded: fields about OpenAI-hosted features the
# workers have no equivalent for (they change nothing in what is generated here).
_FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
    "temperature", "top_p", "reasoning", "text", "metadata", "user", "prompt_cache_key", "store", "stream",
    "previous_response_id", "include", "truncation", "service_tier", "stream_options", "safety_identifier",
    "background", "prompt_cache_retention", "max_tool_calls", "top_logprobs",
})
_UNSUPPORTED = {"conversation": "conversations", "prompt": "stored prompt templates"}
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text"})
_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
MAX_METADATA_KEYS = 16


def invalid(message: str, param: str, code: str = "invalid_value") -> errors.GatewayError:
    return errors.invalid_request(message, param=param, code=code)


def check_body(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Check everything but ``model`` and ``stream`` (the shared checks); return the input as items."""
    if not _FIELDS.issuperset(body):
        for name in body:
            if name in _UNSUPPORTED:
                raise invalid(f"'{name}' is not supported by this gateway ({_UNSUPPORTED[name]}); send 'input' "
                              "and 'previous_response_id' instead.", name, "unsupported_parameter")
            if name not in _FIELDS:
                raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    for name, check in _CHECKS:  # in this order; a field that is absent or null is not checked
        value = body.get(name)
        if value is not None:
            check(value, name)
    return input_items(body.get("input"))


def _check_background(value: Any, name: str) -> None:
    if value:
        raise invalid("Background responses are not supported by this gateway.", name, "unsupported_parameter")


def _check_str(value: Any, name: str) -> None:
    if not isinstance(value, str):
        raise type_error(name, "a string")


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise type_error(name, "a boolean")


def _number_check(integer: bool = False, low: float | None = None,
                  high: float | None = None) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
            raise type_error(name, "an integer" if integer else "a number")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise invalid(f"Invalid value for '{name}': must be {bounds}.", name)
    return check


def _check_metadata(metadata: Any, name: str = "") -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise type_error("metadata", "an object")
    if len(metadata) > MAX_METADATA_KEYS:
        raise invalid(f"'metadata' has at most {MAX_METADATA_KEYS} keys.", "metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise invalid("'metadata' maps keys of at most 64 characters to strings of at most 512.",
                          f"metadata.{key[:64]}")


def _check_reasoning(reasoning: Any, name: str = "") -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise type_error("reasoning", "an object")
    effort = reasoning.get("effort")
    if effort is not None and effort not in _EFFORTS:
        raise invalid(f"Invalid value for 'reasoning.effort': {effort!r}; supported: {', '.join(sorted(_EFFORTS))}.",
                      "reasoning.effort")


def _check_text(text: Any, name: str = "") -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise type_error("text", "an object")
    fmt = text.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise type_error("text.format", "an object")
    kind = fmt.get("type")
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise invalid("Missing required parameter: 'text.format.name'.", "text.format.name",
                          "missing_required_parameter")
        if not isinstance(fmt.get("schema"), dict):
            raise type_error("text.format.schema", "an object")
        if fmt.get("strict") is not None and not isinstance(fmt["strict"], bool):
            raise type_error("text.format.strict", "a boolean")
    elif kind not in ("text", "json_object"):
        raise invalid(f"Invalid value for 'text.format.type': {kind!r}; supported: 'text', 'json_object', "
                      "'json_schema'.", "text.format.type")


def _check_tools(tools: Any, name: str = "") -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise type_error("tools", "an array")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise type_error(f"tools[{i}]", "an object")
        if tool.get("type") != "function":
            raise invalid(f"Invalid value for 'tools[{i}].type': {tool.get('type')!r}; this gateway supports "
                          "function tools only.", f"tools[{i}].type")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid(f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name",
                          "missing_required_parameter")
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise type_error(f"tools[{i}].parameters", "an object")
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            raise type_error(f"tools[{i}].description", "a string")
        if tool.get("strict") is not None and not isinstance(tool["strict"], bool):
            raise type_error(f"tools[{i}].strict", "a boolean")


def _check_tool_choice(choice: Any, name: str = "") -> None:
    if choice is None or choice in ("auto", "none", "required"):
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise invalid("Missing required parameter: 'tool_choice.name'.", "tool_choice.name",
                          "missing_required_parameter")
        return
    raise invalid("Invalid value for 'tool_choice': 'auto', 'none', 'required' or "
                  "{\"type\": \"function\", \"name\": ...}.", "tool_choice")


_CHECKS: tuple[tuple[str, Callable[[Any, str], None]], ...] = (
    ("background", _check_background), ("instructions", _check_str), ("previous_response_id", _check_str),
    ("user", _check_str), ("prompt_cache_key", _check_str), ("store", _check_bool),
    ("parallel_tool_calls", _check_bool), ("max_output_tokens", _number_check(integer=True, low=1)),
    ("temperature", _number_check(low=0, high=2)), ("top_p", _number_check(low=0, high=1)),
    ("top_logprobs", _number_check(integer=True, low=0, high=20)), ("metadata", _check_metadata),
    ("reasoning", _check_reasoning), ("text", _check_text), ("tools", _check_tools),
    ("tool_choice", _check_tool_choice),
)


# --- input items -------------------------------------------------------------------------------------

def input_items(raw: Any) -> list[dict[str, Any]]:
    """The request's input as items, each checked (a string becomes one user message)."""
    if raw is None:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise type_error("input", "a string or an array of items")
    items: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise type_error(param, "an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            items.append(_message_item(item, param))
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                if not isinstance(item.get(name), str):
                    raise type_error(f"{param}.{name}", "a string")
            items.append({"type": "function_call", "call_id": item["call_id"], "name": item["name"],
                          "arguments": item["arguments"]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise type_error(f"{param}.call_id", "a string")
            output = item.get("output")
            if not isinstance(output, str | list):
                raise type_error(f"{param}.output", "a string or an array of content parts")
            items.append({"type": "function_call_output", "call_id": item["call_id"],
                          "output": output if isinstance(output, str) else _text_of(output, f"{param}.output")})
        elif kind == "reasoning":
            items.append({"type": "reasoning", "summary": item.get("summary") or [],
                          **({"content": item["content"]} if isinstance(item.get("content"), list) else {})})
        else:
            raise invalid(f"Invalid value for '{param}.type': {kind!r}; supported: "
                          f"{', '.join(repr(t) for t in _ITEM_TYPES)}.", f"{param}.type")
    if not items:
        raise invalid("'input' must contain at least one item.", "input")
    return items


def _message_item(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise invalid(f"Invalid value for '{param}.role': {role!r}; supported: 'user', 'assistant', 'system', "
                      "'developer'.", f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"type": "message", "role": role, "content": content}
    if not isinstance(content, list):
        raise type_error(f"{param}.content", "a string or an array of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        if not isinstance(part, dict):
            raise type_error(where, "an object")
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise type_error(f"{where}.text", "a string")
            parts.append({"type": kind, "text": text})
        elif kind == "input_image" and role != "assistant":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise invalid(f"'{where}.image_url' must be a URL or a data URL (file ids are not supported).",
                              f"{where}.image_url")
            parts.append({"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"})
        else:
            raise invalid(f"Invalid value for '{where}.type': {kind!r}; supported: 'input_text', "
                          "'output_text', 'refusal', 'input_image'.", f"{where}.type")
    return {"type": "message", "role": role, "content": parts}


def _text_of(parts: list[Any], param: str) -> str:
    texts: list[str] = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise invalid(f"'{param}[{j}]' must be a text part.", f"{param}[{j}]")
        texts.append(part["text"])
    return "".join(texts)


# --- to Chat Completions -----------------------------------------------------------------------------

def chat_messages(history: list[dict[str, Any]], items: list[dict[str, Any]],
                  instructions: str | None) -> list[dict[str, Any]]:
    """The chat messages of a conversation: ``instructions`` first, then the stored items of the chain
    (``history``, already checked), then this request's ``items``. A ``function_call_output`` whose
    ``call_id`` no earlier ``function_call`` made is refused (400 naming the item)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    calls: set[str] = set()
    last_call = False  # the last message is an assistant message that function calls may join
    offset = len(history)
    for n, item in enumerate((*history, *items)):
        kind = item["type"]
        if kind == "message":
            role = _ROLES[item["role"]]
            messages.append({"role": role, "content": _chat_content(role, item["content"])})
            last_call = role == "assistant"
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            calls.add(item["call_id"])
            if last_call:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                last_call = True
        elif kind == "function_call_output":
            if item["call_id"] not in calls:
                i = n - offset
                raise invalid(f"No tool call found for function call output with call_id {item['call_id']}.",
                              f"input[{i}].call_id" if i >= 0 else "previous_response_id")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
            last_call = False
        # reasoning items stay in the conversation's record; workers take no reasoning as input
    return messages


def _chat_content(role: str, content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if role != "user":  # what a worker generated, or an instruction: plain text
        return "".join(p["text"] for p in content if "text" in p)
    return [{"type": "text", "text": p["text"]} if "text" in p else
            {"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}} for p in content]


def chat_body(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The Chat Completions body for the worker: ``messages`` and the translated options."""
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    tools = body.get("tools")
    if tools:
        chat["tools"] = [{"type": "function", "function": {
            k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}}
            for t in tools]
    choice = body.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = choice if isinstance(choice, str) else {"type": "function",
                                                                      "function": {"name": choice["name"]}}
    if body.get("parallel_tool_calls") is not None and tools:
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "user", "prompt_cache_key"):
        if body.get(name) is not None:
            chat[name] = body[name]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    fmt = (body.get("text") or {}).get("format")
    if fmt is not None and fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}}
    elif fmt is not None and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat
