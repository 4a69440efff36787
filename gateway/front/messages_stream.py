"""A worker's Chat Completions stream as Anthropic's Messages events, chunk for chunk.

Per chat chunk, at once: ``message_start`` and a ``ping`` before the first; a text delta opens a ``text``
block (``content_block_start``) and becomes a ``text_delta``; a tool call opens a ``tool_use`` block whose
argument pieces are ``input_json_delta`` events; a new block closes the open one (``content_block_stop``).
After settling (the usage and the billed cost are known): the open block's stop, ``message_delta`` with
``stop_reason`` and the usage (disjoint fields plus ``cost_in_usd_ticks``), ``message_stop``. A stream cut
by the worker ends with an ``error`` event, which the SDK raises.
"""

from __future__ import annotations

from typing import Any

import orjson

from billing.usage_record import estimate_prompt_tokens
from gateway import errors
from gateway.front import messages_errors
from gateway.front.messages_reply import anthropic_usage, reasoning_of, stop_reason


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_PING = event("ping", {"type": "ping"})
_DELTA_END = b"}}\n\n"
_STOP = event("message_stop", {"type": "message_stop"})


class MessagesStream:
    """The events of one stream (a ``StreamShaper``): ``chunk`` for each parsed chat chunk, then ``finish``
    or ``fail``."""

    __slots__ = ("_block", "_delta_head", "_finish_reason", "_id", "_matched", "_open", "_started", "_stops",
                 "_thinking", "_tool_index", "_usage", "body", "model")
    passthrough = False

    def __init__(self, message_id: str, model: str, body: dict[str, Any], thinking: bool = False) -> None:
        self._id = message_id
        self._thinking = thinking  # show the worker's reasoning as thinking blocks
        self.model = model
        self.body = body  # the translated chat body (for the prompt estimate of message_start)
        self._stops = body.get("stop")
        self._started = False
        self._block = -1  # index of the last block opened
        self._open: str | None = None  # "thinking", "text" or "tool_use" while a block is open
        self._tool_index: Any = None  # the chat tool call index the open tool_use block belongs to
        self._delta_head = b""  # the open text block's text_delta event up to its text (written once a block)
        self._finish_reason: Any = None
        self._matched: Any = None
        self._usage: Any = None

    def _start(self, served: Any) -> bytes:
        self._started = True
        model = served if isinstance(served, str) and served else self.model
        usage = {"input_tokens": estimate_prompt_tokens(self.body), "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "output_tokens": 0}
        return event("message_start", {"type": "message_start", "message": {
            "id": self._id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}) + _PING

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._block})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        closed = self._close()
        self._block += 1
        self._open = kind
        return closed + event("content_block_start",
                              {"type": "content_block_start", "index": self._block, "content_block": block})

    def chunk(self, parsed: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start(parsed.get("model"))
        failure = parsed.get("error")
        if failure is not None:  # the worker's own error event, in the middle of its stream
            message = failure.get("message") if isinstance(failure, dict) else failure
            return out + event("error", {"type": "error", "error": {
                "type": "api_error", "message": str(message or "the worker failed")[:2000]}})
        usage = parsed.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = parsed.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return out
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if self._thinking:
                reasoning = reasoning_of(delta)
                if isinstance(reasoning, str) and reasoning:
                    if self._open != "thinking":
                        out += self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                    out += event("content_block_delta", {"type": "content_block_delta", "index": self._block,
                                                         "delta": {"type": "thinking_delta", "thinking": reasoning}})
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                    self._delta_head = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                                        + str(self._block).encode() + b',"delta":{"type":"text_delta","text":')
                out += self._delta_head + orjson.dumps(text) + _DELTA_END  # the hot case: no dict per chunk
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        out += self._tool_piece(call)
        if choice.get("finish_reason") is not None:
            self._finish_reason = choice.get("finish_reason")
            self._matched = choice.get("stop_reason")
        return out

    def _tool_piece(self, call: dict[str, Any]) -> bytes:
        out = b""
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        index = call.get("index", 0)
        if self._open != "tool_use" or index != self._tool_index or call.get("id"):
            self._tool_index = index
            out += self._open_block("tool_use", {"type": "tool_use", "id": str(call.get("id") or ""),
                                                 "name": str(function.get("name") or ""), "input": {}})
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out += event("content_block_delta", {"type": "content_block_delta", "index": self._block,
                                                 "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return out

    def finish(self, billed_ticks: int | None) -> bytes:
        """The closing events, once the request is settled."""
        out = b"" if self._started else self._start(None)
        out += self._close()
        reason, sequence = stop_reason(self._finish_reason or "stop", self._matched, self._stops)
        out += event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                       "usage": anthropic_usage(self._usage, billed_ticks)})
        return out + _STOP

    def fail(self, exc: errors.GatewayError) -> bytes:
        return event("error", {"type": "error", "error": {"type": messages_errors.error_type(exc.status),
                                                          "message": exc.message}})
