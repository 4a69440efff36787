"""Requests to prompt token ids, the way a chat template lays them out.

Chat: BOS, the leading system (or developer) message, then the ``tools`` definitions (JSON with sorted keys)
as real templates place them, then every other message, then the generation prompt (the assistant's role
marker). A message is: start marker, role, separator, tool_call_id, content (a string or the "text" parts of
a list), tool calls (name and arguments), end marker. An assistant's ``reasoning_content`` is dropped, as
reasoning models' templates drop earlier thinking.

Completions: ``prompt`` as a string (BOS + text), a list of strings (concatenated), a list of token ids (used
as given) or a list of such lists (the first).
"""

from __future__ import annotations

from array import array
from typing import Any

import orjson

from workersim.tokens import (
    BOS,
    CALL_END,
    CALL_ID,
    CALL_SEP,
    CALL_START,
    MSG_END,
    MSG_SEP,
    MSG_START,
    TOOLS_END,
    TOOLS_START,
    Tokenizer,
)

_SYSTEM_ROLES = ("system", "developer")


class PromptError(ValueError):
    """The request cannot be turned into a prompt (answered 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def dump_json(value: Any) -> str:
    """Canonical JSON text (sorted keys) of a value taken from a request."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:  # pragma: no cover - parsed JSON always serialises
        raise PromptError(f"cannot serialise {type(value).__name__}") from exc


class PromptBuilder:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._generation_prompt = (MSG_START, *tokenizer.encode("assistant"), MSG_SEP)

    # -- chat ------------------------------------------------------------------------------------------
    def chat(self, body: dict[str, Any]) -> list[int]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise PromptError("'messages' must be a non-empty list", "messages")
        out = [BOS]
        start = 0
        first = messages[0]
        if isinstance(first, dict) and first.get("role") in _SYSTEM_ROLES:
            self._message(out, first)
            start = 1
        tools = body.get("tools")
        if tools:
            if not isinstance(tools, list):
                raise PromptError("'tools' must be a list", "tools")
            out.append(TOOLS_START)
            self._tok.extend(out, dump_json(tools))
            out.append(TOOLS_END)
        for i in range(start, len(messages)):
            self._message(out, messages[i])
        out.extend(self._generation_prompt)
        return out

    def tool_call_ids(self, name: str, arguments: str) -> list[int]:
        """The ids of one tool call as the template renders it in an assistant message."""
        out: list[int] = []
        self._tool_call(out, name, arguments)
        return out

    def _message(self, out: list[int], message: Any) -> None:
        if not isinstance(message, dict):
            raise PromptError("each message must be an object", "messages")
        role = message.get("role")
        if not isinstance(role, str):
            raise PromptError("each message needs a string 'role'", "messages")
        extend = self._tok.extend
        out.append(MSG_START)
        extend(out, role)
        out.append(MSG_SEP)
        tool_call_id = message.get("tool_call_id")
        if isinstance(tool_call_id, str):
            out.append(CALL_ID)
            extend(out, tool_call_id)
        content = message.get("content")
        if isinstance(content, str):
            extend(out, content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise PromptError("content parts must be objects", "messages")
                text = part.get("text") if part.get("type") == "text" else None
                extend(out, text if isinstance(text, str) else dump_json(part))
        elif content is not None:
            raise PromptError("'content' must be a string, a list of parts or null", "messages")
        tool_calls = message.get("tool_calls")
        if tool_calls:
            if not isinstance(tool_calls, list):
                raise PromptError("'tool_calls' must be a list", "messages")
            for call in tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise PromptError("each tool call needs a function with a name", "messages")
                arguments = function.get("arguments", "")
                self._tool_call(
                    out, function["name"], arguments if isinstance(arguments, str) else dump_json(arguments)
                )
        out.append(MSG_END)

    def _tool_call(self, out: list[int], name: str, arguments: str) -> None:
        out.append(CALL_START)
        self._tok.extend(out, name)
        out.append(CALL_SEP)
        self._tok.extend(out, arguments)
        out.append(CALL_END)

    # -- completions -----------------------------------------------------------------------------------
    def completion(self, body: dict[str, Any]) -> list[int]:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            out = [BOS]
            self._tok.extend(out, prompt)
            return out
        if not isinstance(prompt, list) or not prompt:
            raise PromptError("'prompt' must be a string, a list of strings or a list of token ids", "prompt")
        first = prompt[0]
        if isinstance(first, str):
            if not all(isinstance(p, str) for p in prompt):
                raise PromptError("'prompt' mixes strings and other values", "prompt")
            out = [BOS]
            self._tok.extend(out, "".join(prompt))
            return out
        ids = first if isinstance(first, list) else prompt
        if not ids:
            raise PromptError("'prompt' has no tokens", "prompt")
        try:
            array("I", ids)
        except (TypeError, OverflowError) as exc:
            raise PromptError("token ids must be integers in [0, 2**32)", "prompt") from exc
        return list(ids)
