"""One pass over a chat body: the nesting bound, the messages' checks, routing's canonical bytes and
the prompt estimate, where four walks did the same work.

A parsed chat body is walked once (``scan``). The walk follows the shape of a chat request: the body
(depth 1), ``messages`` (2), each message (3), its content parts and tool calls (4, 5) and each call's
``function`` (6); the values it does not know, wherever they are, get :func:`json_depth.exceeds` with
the bound that is left at their depth, and ``tools`` gets orjson's encoder (which routing's canonical
bytes need anyway), wrapped so that it fails exactly where the body would nest more than
:data:`json_depth.MAX_DEPTH` deep. The nesting answer is the one ``json_depth.exceeds`` gives for the
whole body.

On the way it builds what ``gateway.routing.prefix.chat_canonical`` builds (the same bytes and the same
opening length, byte for byte: ``tests/gateway/test_chat_scan.py`` holds the two equal) and counts what
``billing.usage_record.estimate_prompt_tokens`` counts. A body that does not pass the messages' checks
(no list, an empty one, a message that is not an object, a role that is not a string, content that is
neither a string nor a list) is not scanned: ``scan`` returns None and the caller takes the exact old
way (the nesting check of the whole body, then the checks in their order), so every error stays what
it was and comes in the same order.

``python -m bench.parse_cpu`` measures it against the separate walks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from billing.usage_record import estimate_prompt_tokens
from gateway import errors
from gateway.front.json_depth import MAX_DEPTH, encoded_within, exceeds
from gateway.pipeline.request import PromptScan
from gateway.routing.prefix import CALL_MARK, MESSAGE_MARK, SEPARATOR, SYSTEM_ROLES, TOOLS_MARK

_SORT = orjson.OPT_SORT_KEYS
# What is left of the bound for an unknown value at each depth (exceeds(value, limit): value at depth 1).
_AT_2 = MAX_DEPTH - 1  # a top-level field's value
_AT_4 = MAX_DEPTH - 3  # a message field's value
_AT_5 = MAX_DEPTH - 4  # a content part, a tool call
_AT_6 = MAX_DEPTH - 5  # a tool call's field's value
_AT_7 = MAX_DEPTH - 6  # a function field's value (arguments given as JSON)


def _too_deep() -> errors.GatewayError:
    return errors.too_deep(MAX_DEPTH)


def scan(body: dict[str, Any]) -> PromptScan | None:
    """The body's canonical bytes, opening and prompt estimate, or None where the messages do not pass
    the chat checks (the caller then checks the body the exact old way); raises the nesting error
    (a 400) for a body nested more than MAX_DEPTH deep."""
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        return None
    for field, value in body.items():
        kind = type(value)
        if (kind is dict or kind is list) and field != "messages" and field != "tools" and exceeds(value, _AT_2):
            raise _too_deep()
    tools = _tools_text(body.get("tools"))
    count = len(messages)
    first = messages[0]
    start = 1 if type(first) is dict and first.get("role") in SYSTEM_ROLES else 0
    end = -1  # index of the opening's last message (as chat_canonical finds it)
    if start < count:
        end = start
        for i in range(start + 1, count):
            m = messages[i]
            if type(m) is dict and m.get("role") == "assistant":
                end = i
                break
    parts: list[str] = []
    add = parts.append
    chars = 0
    opening_parts = 0
    i = -1
    for message in messages:
        i += 1
        if i == start and tools:
            add(tools)
        if type(message) is not dict:
            return None
        role = message.get("role")
        if type(role) is not str:
            return None
        content = message.get("content")
        calls = message.get("tool_calls")
        call_id = message.get("tool_call_id")
        if type(call_id) is str:
            add(f"{MESSAGE_MARK}{role}{SEPARATOR}{call_id}{SEPARATOR}")
            if len(message) != 2 + (content is not None) + (calls is not None):
                _message_fields(message, content, calls)
        else:
            add(f"{MESSAGE_MARK}{role}{SEPARATOR}")
            if len(message) != 1 + (content is not None) + (calls is not None):
                _message_fields(message, content, calls)
        if type(content) is str:
            add(content)
            chars += len(content)
        elif type(content) is list:
            chars += _parts(content, add)
        elif content is not None:
            return None
        if calls is not None:
            if type(calls) is not list:
                if type(calls) is dict and exceeds(calls, _AT_4):
                    raise _too_deep()
            else:
                for call in calls:  # depth 5; its function 6
                    if type(call) is not dict:
                        if type(call) is list and exceeds(call, _AT_5):
                            raise _too_deep()
                        continue
                    function = call.get("function")
                    if type(function) is not dict:
                        _call_fields(call, function)
                        continue
                    if len(call) != 1 + (type(call.get("id")) is str) + (type(call.get("type")) is str):
                        _call_fields(call, function)
                    name = function.get("name")
                    args = function.get("arguments")
                    if len(function) != (type(name) is str) + (args is not None):
                        _function_fields(function)  # checks the arguments too
                    elif type(args) is not str and exceeds(args, _AT_7):
                        raise _too_deep()
                    given = args if isinstance(args, str) else orjson.dumps(args, option=_SORT).decode()
                    if type(name) is str:
                        add(f"{CALL_MARK}{name}{SEPARATOR}{given}")
                    else:
                        add(f"{CALL_MARK}{SEPARATOR}{given}")
        if i == end:
            opening_parts = len(parts)
    if start >= count and tools:  # only a system message: the tools come after it
        add(tools)
    text = "".join(parts)
    data = text.encode("utf-8", "surrogatepass")
    if not opening_parts:
        opening = 0
    elif text.isascii():
        opening = sum(map(len, parts[:opening_parts]))
    else:
        opening = len("".join(parts[:opening_parts]).encode("utf-8", "surrogatepass"))
    tokens = 4 * count + (chars + 3) // 4 if "prompt" not in body else estimate_prompt_tokens(body)
    return PromptScan(data, opening, tokens)


def _tools_text(tools: Any) -> str:
    """The tools' canonical text (framing mark, then JSON with sorted keys); "" for none."""
    if not tools:
        return ""  # nothing, or an empty list or object: depth 2 at most
    encoded = encoded_within(tools, _AT_2, _SORT)
    if encoded is None:
        raise _too_deep()
    return TOOLS_MARK + encoded.decode()


def _message_fields(message: dict[str, Any], content: Any, calls: Any) -> None:
    """The nesting of a message's fields other than ``content`` and ``tool_calls`` (depth 4)."""
    for value in message.values():
        kind = type(value)
        if (kind is dict or kind is list) and value is not content and value is not calls and exceeds(value, _AT_4):
            raise _too_deep()


def _parts(content: list[Any], add: Callable[[str], None]) -> int:
    """Content parts (depth 5): their canonical text added, the characters the estimate counts returned."""
    chars = 0
    for part in content:
        if type(part) is dict:
            if exceeds(part, _AT_5):
                raise _too_deep()
            text = part.get("text")
            if type(text) is str:
                chars += len(text)
                if part.get("type") == "text":
                    add(text)
                    continue
        elif type(part) is list and exceeds(part, _AT_5):
            raise _too_deep()
        add(orjson.dumps(part, option=_SORT).decode())
    return chars


def _call_fields(call: dict[str, Any], function: Any) -> None:
    """The nesting of a tool call's fields (depth 6; ``function``'s own fields are the caller's)."""
    if type(function) is list and exceeds(function, _AT_6):
        raise _too_deep()
    for value in call.values():
        kind = type(value)
        if (kind is dict or kind is list) and value is not function and exceeds(value, _AT_6):
            raise _too_deep()


def _function_fields(function: dict[str, Any]) -> None:
    """The nesting of a tool call's function's fields (depth 7)."""
    for value in function.values():
        kind = type(value)
        if (kind is dict or kind is list) and exceeds(value, _AT_7):
            raise _too_deep()
