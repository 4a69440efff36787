"""What the simulated model answers: token ids, their text pieces, reasoning, tool calls.

The answer is deterministic for a prompt (its words are seeded by a hash of the prompt's last tokens) and its
length is the request's ``max_tokens`` / ``max_completion_tokens`` (finish reason "length") or the worker's
``max_tokens_default`` (finish reason "stop"). In reasoning mode the first ``reasoning_tokens`` of that length
are reasoning, counted inside the completion tokens as vLLM does.

A chat request with ``tools`` behaves like a coding model's turn: ``tool_choice`` "required" or naming a
function always calls; "auto" (the default) calls on a deterministic share of turns (``tool_call_rate``,
halved after each tool round since the last user message, so that agent loops end), sometimes two
functions at once (``parallel_tool_call_rate``, unless ``parallel_tool_calls`` is false). Arguments are
valid for the function's JSON schema; finish reason "tool_calls"; the length is the calls' tokens. A
``response_format`` of json_object / json_schema answers with JSON valid for the schema. ``stop`` strings
cut the answer before the first one, as vLLM does (``stop_reason`` names it).
"""

from __future__ import annotations

from array import array
from typing import Any

import orjson
from xxhash import xxh3_64_intdigest

from workersim.prompt import PromptBuilder, PromptError
from workersim.schema_instance import instance
from workersim.tokens import OutputWords, Tokenizer

_REASONING_SEED = 0x9E3779B97F4A7C15


class Plan:
    """The planned output of one request (one choice): its token ids and what they say."""

    __slots__ = ("calls", "content_pieces", "finish_reason", "ids", "reasoning_pieces", "stop_reason")

    def __init__(
        self,
        ids: list[int],
        finish_reason: str,
        content_pieces: list[str],
        reasoning_pieces: list[str] | None = None,
        calls: list[ToolCall] | None = None,
        stop_reason: str | None = None,
    ) -> None:
        self.ids = ids
        self.finish_reason = finish_reason
        self.content_pieces = content_pieces
        self.reasoning_pieces = reasoning_pieces  # None: not a reasoning answer
        self.calls = calls or []
        self.stop_reason = stop_reason  # the stop string that ended the answer (vLLM's stop_reason)

    @property
    def content(self) -> str | None:
        return None if self.calls else "".join(self.content_pieces)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return [c.call for c in self.calls]

    @property
    def reasoning(self) -> str | None:
        return None if self.reasoning_pieces is None else "".join(self.reasoning_pieces)

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning_pieces or ())

    def chat_deltas(self) -> list[dict[str, Any] | None]:
        """Per token, the ``delta`` a chat stream sends (None: the token shows nothing, like a marker)."""
        deltas: list[dict[str, Any] | None] = [{"reasoning_content": p} for p in self.reasoning_pieces or ()]
        if not self.calls:
            deltas += [{"content": p} for p in self.content_pieces]
            return deltas
        for index, tc in enumerate(self.calls):
            function = tc.call["function"]
            deltas.append({"tool_calls": [{"index": index, "id": tc.call["id"], "type": "function",
                                           "function": {"name": function["name"], "arguments": ""}}]})
            deltas += [None] * (tc.prefix - 1)
            deltas += [{"tool_calls": [{"index": index, "function": {"arguments": p}}]} for p in tc.arg_pieces]
            deltas.append(None)  # the call's end marker
        return deltas

    def pieces(self) -> list[str]:
        """The text of each token, for logprobs (markers show as empty strings)."""
        out = list(self.reasoning_pieces or ())
        if not self.calls:
            return out + self.content_pieces
        for tc in self.calls:
            out += [""] * tc.prefix + tc.arg_pieces + [""]
        return out


class ToolCall:
    """One planned call: the message's ``tool_calls`` entry, its argument pieces, and how many tokens of
    the call come before its arguments (the call markers and the function's name)."""

    __slots__ = ("arg_pieces", "call", "prefix")

    def __init__(self, call: dict[str, Any], arg_pieces: list[str], prefix: int) -> None:
        self.call = call
        self.arg_pieces = arg_pieces
        self.prefix = prefix


def prompt_seed(prompt: list[int], request_seed: object = None) -> int:
    """A stable seed for the answer's words: the hash of the prompt's last 64 tokens and its length."""
    seed = xxh3_64_intdigest(array("I", prompt[-64:]), len(prompt))
    if isinstance(request_seed, int) and not isinstance(request_seed, bool):
        seed ^= request_seed & 0xFFFFFFFFFFFFFFFF
    return seed


def coin(seed: int, salt: int) -> float:
    """A deterministic draw in [0, 1) for the answer whose seed is ``seed`` (``salt`` tells draws apart)."""
    return xxh3_64_intdigest(salt.to_bytes(8, "little"), seed & 0xFFFFFFFFFFFFFFFF) / 2.0**64


def _tool_rounds(body: dict[str, Any]) -> int:
    """Assistant tool-call turns since the last user message: each makes another call less likely."""
    rounds = 0
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") == "user":
            break
        if message.get("role") == "assistant" and message.get("tool_calls"):
            rounds += 1
    return rounds


class Planner:
    def __init__(
        self, tokenizer: Tokenizer, prompts: PromptBuilder, words: OutputWords, reasoning_tokens: int,
        tool_call_rate: float = 0.0, parallel_tool_call_rate: float = 0.0,
    ) -> None:
        self._tok = tokenizer
        self._prompts = prompts
        self._words = words
        self._reasoning_tokens = reasoning_tokens
        self._tool_call_rate = tool_call_rate
        self._parallel_rate = parallel_tool_call_rate

    def completion(self, length: int, explicit: bool, seed: int, stop: list[str] | None = None) -> Plan:
        pieces, ids = self._words.answer(seed, length)
        return _stopped(Plan(ids, "length" if explicit else "stop", pieces), stop)

    def chat(
        self, body: dict[str, Any], length: int, explicit: bool, seed: int, reasoning: int, call_id: str,
        stop: list[str] | None = None,
    ) -> Plan:
        """``reasoning``: how many reasoning tokens the answer starts with (0: not a reasoning answer)."""
        reasoning_pieces: list[str] | None = None
        ids: list[int] = []
        r = 0
        if reasoning:
            r = min(reasoning, length)
            reasoning_pieces, ids = self._words.answer(seed ^ _REASONING_SEED, r)
        functions = self._chosen_tools(body, seed) if body.get("tools") else []
        if functions:
            calls: list[ToolCall] = []
            for i, function in enumerate(functions):
                name, arguments = self._tool_call(function, seed + i)
                call_ids = self._prompts.tool_call_ids(name, arguments)
                arg_pieces = self._tok.pieces(arguments)
                call = {"id": call_id if i == 0 else f"{call_id}_{i}", "type": "function",
                        "function": {"name": name, "arguments": arguments}}
                ids += call_ids
                calls.append(ToolCall(call, arg_pieces, len(call_ids) - len(arg_pieces) - 1))
            return Plan(ids, "tool_calls", [], reasoning_pieces, calls)
        structured = self._structured(body, seed)
        if structured is not None:
            pieces = self._tok.pieces(structured)
            budget = length - r if explicit else len(pieces)
            finish = "length" if len(pieces) > budget else "stop"
            pieces = pieces[:budget]
            ids += [self._tok.piece_id(p) for p in pieces]
            return Plan(ids, finish, pieces, reasoning_pieces)
        pieces, content_ids = self._words.answer(seed, length - r)
        ids += content_ids
        return _stopped(Plan(ids, "length" if explicit else "stop", pieces, reasoning_pieces), stop)

    # -- structured output -----------------------------------------------------------------------------
    def _structured(self, body: dict[str, Any], seed: int) -> str | None:
        """The JSON text of a ``response_format`` answer, or None for free text."""
        fmt = body.get("response_format")
        if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
            return None
        words, _ = self._words.answer(seed, 16)
        kind = fmt.get("type")
        if kind == "json_object":
            return orjson.dumps({"answer": "".join(words[:6]).strip()}).decode()
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise PromptError("response_format json_schema needs a 'json_schema.schema' object",
                                  "response_format")
            return orjson.dumps(instance(schema, words)).decode()
        raise PromptError("response_format type must be 'text', 'json_object' or 'json_schema'", "response_format")

    # -- tool calls ------------------------------------------------------------------------------------
    def _chosen_tools(self, body: dict[str, Any], seed: int) -> list[dict[str, Any]]:
        """The functions this turn calls: none, one, or two in parallel."""
        tools = body.get("tools")
        choice = body.get("tool_choice")
        if not tools or choice == "none":
            return []
        functions: list[dict[str, Any]] = [
            t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name") if isinstance(choice.get("function"), dict) else None
            for f in functions:
                if f.get("name") == wanted:
                    return [f]
            raise PromptError(f"tool_choice names an unknown function: {wanted!r}", "tool_choice")
        if choice == "required":
            if not functions:
                raise PromptError("tool_choice 'required' needs at least one function tool", "tools")
        elif choice in (None, "auto"):
            # A coding model calls a tool on a share of turns; less and less often after tool results.
            if not functions or coin(seed, 1) >= self._tool_call_rate * 0.5 ** _tool_rounds(body):
                return []
        else:
            raise PromptError("tool_choice must be 'none', 'auto', 'required' or a named function", "tool_choice")
        first = seed % len(functions)
        chosen = [functions[first]]
        if (len(functions) > 1 and body.get("parallel_tool_calls") is not False
                and coin(seed, 2) < self._parallel_rate):
            chosen.append(functions[(first + 1 + (seed >> 20) % (len(functions) - 1)) % len(functions)])
        return chosen

    def _tool_call(self, function: dict[str, Any], seed: int) -> tuple[str, str]:
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise PromptError("each function tool needs a name", "tools")
        params = function.get("parameters")
        words, _ = self._words.answer(seed, 8)
        args = instance(params, words) if isinstance(params, dict) else {}
        return name, orjson.dumps(args if isinstance(args, dict) else {"value": args}).decode()


def _stopped(plan: Plan, stop: list[str] | None) -> Plan:
    """The answer cut before the first stop string it contains (vLLM leaves the stop string out of the
    text and names it in ``stop_reason``); the tokens up to the one completing it are generated."""
    if not stop or plan.calls:
        return plan
    text = "".join(plan.content_pieces)
    hits = [(at, s) for s in stop if s and (at := text.find(s)) >= 0]
    if not hits:
        return plan
    at, which = min(hits)
    end = at + len(which)
    kept: list[str] = []
    pos = 0
    count = 0
    for piece in plan.content_pieces:
        count += 1
        if pos + len(piece) > at:
            kept.append(piece[: at - pos])
        else:
            kept.append(piece)
        pos += len(piece)
        if pos >= end:
            break
    kept = [p for p in kept if p] if at > 0 else []
    reasoning = len(plan.reasoning_pieces or ())
    return Plan(plan.ids[: reasoning + count], "stop", kept, plan.reasoning_pieces, stop_reason=which)


