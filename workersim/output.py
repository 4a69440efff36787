"""What the simulated model answers: token ids, their text pieces, reasoning, tool calls.

The answer is deterministic for a prompt (its words are seeded by a hash of the prompt's last tokens) and its
length is the request's ``max_tokens`` / ``max_completion_tokens`` (finish reason "length") or the worker's
``max_tokens_default`` (finish reason "stop"). In reasoning mode the first ``reasoning_tokens`` of that length
are reasoning, counted inside the completion tokens as vLLM does. A chat request with ``tools`` and a
``tool_choice`` of "required" or naming a function is answered with one call of that function (arguments
made from its JSON schema) and finish reason "tool_calls"; its length is the call's tokens.
"""

from __future__ import annotations

from array import array
from typing import Any

import orjson
from xxhash import xxh3_64_intdigest

from workersim.prompt import PromptBuilder, PromptError
from workersim.tokens import OutputWords, Tokenizer

_REASONING_SEED = 0x9E3779B97F4A7C15


class Plan:
    """The planned output of one request: its token ids and what they say."""

    __slots__ = ("call_prefix", "content_pieces", "finish_reason", "ids", "reasoning_pieces", "tool_arg_pieces",
                 "tool_call")

    def __init__(
        self,
        ids: list[int],
        finish_reason: str,
        content_pieces: list[str],
        reasoning_pieces: list[str] | None = None,
        tool_call: dict[str, Any] | None = None,
        tool_arg_pieces: list[str] | None = None,
        call_prefix: int = 0,
    ) -> None:
        self.ids = ids
        self.finish_reason = finish_reason
        self.content_pieces = content_pieces
        self.reasoning_pieces = reasoning_pieces  # None: not a reasoning answer
        self.tool_call = tool_call
        self.tool_arg_pieces = tool_arg_pieces or []
        self.call_prefix = call_prefix  # tokens of the call before its arguments (markers and name)

    @property
    def content(self) -> str | None:
        return None if self.tool_call is not None else "".join(self.content_pieces)

    @property
    def reasoning(self) -> str | None:
        return None if self.reasoning_pieces is None else "".join(self.reasoning_pieces)

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning_pieces or ())

    def chat_deltas(self) -> list[dict[str, Any] | None]:
        """Per token, the ``delta`` a chat stream sends (None: the token shows nothing, like a marker)."""
        deltas: list[dict[str, Any] | None] = [{"reasoning_content": p} for p in self.reasoning_pieces or ()]
        call = self.tool_call
        if call is None:
            deltas += [{"content": p} for p in self.content_pieces]
            return deltas
        function = call["function"]
        deltas.append({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                       "function": {"name": function["name"], "arguments": ""}}]})
        deltas += [None] * (self.call_prefix - 1)
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in self.tool_arg_pieces]
        deltas.append(None)  # the call's end marker
        return deltas


def prompt_seed(prompt: list[int], request_seed: object = None) -> int:
    """A stable seed for the answer's words: the hash of the prompt's last 64 tokens and its length."""
    seed = xxh3_64_intdigest(array("I", prompt[-64:]), len(prompt))
    if isinstance(request_seed, int) and not isinstance(request_seed, bool):
        seed ^= request_seed & 0xFFFFFFFFFFFFFFFF
    return seed


class Planner:
    def __init__(
        self, tokenizer: Tokenizer, prompts: PromptBuilder, words: OutputWords, reasoning_tokens: int
    ) -> None:
        self._tok = tokenizer
        self._prompts = prompts
        self._words = words
        self._reasoning_tokens = reasoning_tokens

    def completion(self, length: int, explicit: bool, seed: int) -> Plan:
        pieces, ids = self._words.answer(seed, length)
        return Plan(ids, "length" if explicit else "stop", pieces)

    def chat(
        self, body: dict[str, Any], length: int, explicit: bool, seed: int, reasoning: bool, call_id: str
    ) -> Plan:
        reasoning_pieces: list[str] | None = None
        ids: list[int] = []
        r = 0
        if reasoning:
            r = min(self._reasoning_tokens, length)
            reasoning_pieces, ids = self._words.answer(seed ^ _REASONING_SEED, r)
        tool = self._requested_tool(body) if body.get("tools") else None
        if tool is not None:
            name, arguments = self._tool_call(tool, seed)
            call_ids = self._prompts.tool_call_ids(name, arguments)
            arg_pieces = self._tok.pieces(arguments)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            ids += call_ids
            return Plan(ids, "tool_calls", [], reasoning_pieces, call, arg_pieces,
                        len(call_ids) - len(arg_pieces) - 1)
        pieces, content_ids = self._words.answer(seed, length - r)
        ids += content_ids
        return Plan(ids, "length" if explicit else "stop", pieces, reasoning_pieces)

    # -- tool calls ------------------------------------------------------------------------------------
    @staticmethod
    def _requested_tool(body: dict[str, Any]) -> dict[str, Any] | None:
        tools = body.get("tools")
        choice = body.get("tool_choice")
        if not tools or choice in (None, "auto", "none"):
            return None
        functions: list[dict[str, Any]] = [
            t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        if choice == "required":
            if not functions:
                raise PromptError("tool_choice 'required' needs at least one function tool", "tools")
            return functions[0]
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name") if isinstance(choice.get("function"), dict) else None
            for f in functions:
                if f.get("name") == wanted:
                    return f
            raise PromptError(f"tool_choice names an unknown function: {wanted!r}", "tool_choice")
        raise PromptError("tool_choice must be 'none', 'auto', 'required' or a named function", "tool_choice")

    def _tool_call(self, function: dict[str, Any], seed: int) -> tuple[str, str]:
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise PromptError("each function tool needs a name", "tools")
        params = function.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        args: dict[str, Any] = {}
        if isinstance(props, dict):
            words, _ = self._words.answer(seed, len(props))
            for (key, schema), word in zip(props.items(), words, strict=True):
                args[key] = _example_value(schema, word.strip().lower())
        return name, orjson.dumps(args).decode()


def _example_value(schema: Any, word: str) -> Any:
    if not isinstance(schema, dict):
        return word
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    examples: dict[str, Any] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {},
                                "null": None}
    return examples.get(kind, word) if isinstance(kind, str) else word
