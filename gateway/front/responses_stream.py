"""A worker's Chat Completions stream as the Responses API's typed SSE events, chunk for chunk.

Each chat chunk becomes the events it implies, sent at once (nothing is held back): the first one
opens the response (``response.created``, ``response.in_progress``); reasoning, text and tool-call
deltas open their output item (``response.output_item.added``, ``response.content_part.added``) and
stream as ``response.reasoning_text.delta``, ``response.output_text.delta`` and
``response.function_call_arguments.delta``; an item is closed (``.done`` events,
``response.output_item.done``) when the next kind begins, tool calls at the end. ``finish`` closes
what is open and sends ``response.completed`` (``response.incomplete`` when the output limit cut it)
with the usage and its cost; ``fail`` sends ``response.failed`` for a stream the worker cut. Every
event carries ``sequence_number``, as the official SDKs expect.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.front.responses_output import (
    call_item,
    message_item,
    new_id,
    reasoning_item,
    response_object,
    text_part,
    usage_object,
)

_REASONING = "reasoning"
_TEXT = "text"
_TEXT_DELTA_TAIL = b',"logprobs":[],"type":"response.output_text.delta","sequence_number":'


class ResponsesStream:
    """The events of one streamed response; ``output`` holds its items as they stand."""

    __slots__ = ("_arguments", "_body", "_calls", "_closed", "_created_at", "_model", "_open", "_pieces", "_seq",
                 "_started", "_text_head",
                 "finish_reason", "output", "response_id", "usage", "worker_error")
    passthrough = False

    def __init__(self, response_id: str, body: dict[str, Any], created_at: float) -> None:
        self.response_id = response_id
        self._body = body
        self._created_at = created_at
        self._seq = 0
        self._started = False
        self._model: str = body["model"]
        self.output: list[dict[str, Any]] = []
        self._open: tuple[str, int] | None = None  # (kind, output index) of the open reasoning/text item
        self._calls: dict[int, int] = {}  # the chat chunk's tool-call index -> output index
        self._pieces: list[str] = []  # the open item's text so far (joined once, when it closes)
        self._text_head = b""  # the open text item's output_text.delta event up to its delta (once an item)
        self._arguments: dict[int, list[str]] = {}  # output index -> a call's argument pieces so far
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self._closed: tuple[bytes, dict[str, Any]] | None = None
        self.worker_error = False  # the worker sent an error event: the response failed there

    # --- events ----------------------------------------------------------------------------------
    def _event(self, out: list[bytes], kind: str, fields: dict[str, Any]) -> None:
        fields["type"] = kind
        fields["sequence_number"] = self._seq
        self._seq += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(fields) + b"\n\n")

    def _response(self, status: str, usage: dict[str, Any] | None = None,
                  error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(self.response_id, self._body, model=self._model, status=status, output=self.output,
                               created_at=self._created_at, usage=usage, finish_reason=self.finish_reason,
                               error=error)

    def _start(self, out: list[bytes]) -> None:
        self._started = True
        opening = self._response("in_progress")  # the same object in both events (encoded, never changed)
        self._event(out, "response.created", {"response": opening})
        self._event(out, "response.in_progress", {"response": opening})

    # --- the chat chunks ---------------------------------------------------------------------------
    def chunk(self, parsed: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        if not self._started:
            model = parsed.get("model")
            if isinstance(model, str) and model:
                self._model = model
            self._start(out)
        usage = parsed.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        error = parsed.get("error")
        if error is not None and not self.worker_error and "choices" not in parsed:
            self.worker_error = True
            detail = error if isinstance(error, dict) else {"message": str(error)}
            code = detail.get("code")
            out.append(self.failed(code if isinstance(code, str) else "server_error",
                                   str(detail.get("message") or "The worker failed.")))
            return b"".join(out)
        if self.worker_error:
            return b""
        choices = parsed.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(out, delta)
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
        return b"".join(out)

    def _delta(self, out: list[bytes], delta: dict[str, Any]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            index = self._opened(out, _REASONING)
            self._pieces.append(reasoning)
            self._event(out, "response.reasoning_text.delta", {"item_id": self.output[index]["id"],
                                                               "output_index": index, "content_index": 0,
                                                               "delta": reasoning})
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._opened(out, _TEXT)
            out.append(self._text_delta(content))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._call_delta(out, call)

    def _text_delta(self, text: str) -> bytes:
        """``response.output_text.delta`` of the open text item, from its template (the hot case: no dict per
        chunk; the same bytes as ``_event``)."""
        self._pieces.append(text)
        seq = self._seq
        self._seq += 1
        return self._text_head + orjson.dumps(text) + _TEXT_DELTA_TAIL + str(seq).encode() + b"}\n\n"

    def _opened(self, out: list[bytes], kind: str) -> int:
        """The output index of the open item of ``kind``, opening it (and closing another) if needed."""
        if self._open is not None and self._open[0] == kind:
            return self._open[1]
        self._close_open(out)
        index = len(self.output)
        if kind == _REASONING:
            item = reasoning_item(new_id("rs"), "", "in_progress")
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = message_item(new_id("msg"), "", "in_progress")
            part = text_part("")
            self._text_head = (b'event: response.output_text.delta\ndata: {"item_id":' + orjson.dumps(item["id"])
                               + b',"output_index":' + str(index).encode() + b',"content_index":0,"delta":')
        self.output.append(item)
        self._pieces = []
        self._event(out, "response.output_item.added", {"output_index": index, "item": _copy(item, [])})
        item["content"] = [part]
        self._event(out, "response.content_part.added", {"item_id": item["id"], "output_index": index,
                                                          "content_index": 0, "part": dict(part)})
        self._open = (kind, index)
        return index

    def _close_open(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        kind, index = self._open
        self._open = None
        item = self.output[index]
        part = item["content"][0]
        text = part["text"] = "".join(self._pieces)
        if kind == _REASONING:
            self._event(out, "response.reasoning_text.done", {"item_id": item["id"], "output_index": index,
                                                              "content_index": 0, "text": text})
        else:
            self._event(out, "response.output_text.done", {"item_id": item["id"], "output_index": index,
                                                           "content_index": 0, "text": text, "logprobs": []})
        self._event(out, "response.content_part.done", {"item_id": item["id"], "output_index": index,
                                                         "content_index": 0, "part": dict(part)})
        item["status"] = "completed"
        self._event(out, "response.output_item.done", {"output_index": index, "item": _copy(item)})

    def _call_delta(self, out: list[bytes], call: dict[str, Any]) -> None:
        position = call.get("index", 0)
        if not isinstance(position, int):
            position = 0
        function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
        index = self._calls.get(position)
        if index is None:
            self._close_open(out)
            index = self._calls[position] = len(self.output)
            call_id = call.get("id")
            name = function.get("name")
            item = call_item(new_id("fc"), call_id if isinstance(call_id, str) and call_id else new_id("call"),
                             name if isinstance(name, str) else "", "", "in_progress")
            self.output.append(item)
            self._arguments[index] = []
            self._event(out, "response.output_item.added", {"output_index": index, "item": dict(item)})
        item = self.output[index]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._arguments[index].append(arguments)
            self._event(out, "response.function_call_arguments.delta", {"item_id": item["id"], "output_index": index,
                                                                        "delta": arguments})

    def _close_all(self, out: list[bytes]) -> None:
        self._close_open(out)
        for index in self._calls.values():
            item = self.output[index]
            item["arguments"] = "".join(self._arguments[index])
            self._event(out, "response.function_call_arguments.done", {
                "item_id": item["id"], "output_index": index, "name": item["name"], "arguments": item["arguments"]})
            item["status"] = "completed"
            self._event(out, "response.output_item.done", {"output_index": index, "item": dict(item)})
        self._calls.clear()

    # --- the end -----------------------------------------------------------------------------------
    def close(self, usage: dict[str, Any] | None, cost_ticks: int | None) -> tuple[bytes, dict[str, Any]]:
        """The closing events of a stream that ended whole, and the final ``Response`` (built once: the
        stored response and the one the client reads are the same)."""
        if self._closed is not None:
            return self._closed
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        self._close_all(out)
        response = self._response("completed", usage_object(usage or self.usage, cost_ticks))
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        self._event(out, kind, {"response": response})
        self._closed = b"".join(out), response
        return self._closed

    def failed(self, code: str, message: str) -> bytes:
        """``response.failed`` for a stream that was cut (the items so far stay in progress)."""
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        if self._open is not None:  # what arrived of the open item
            self.output[self._open[1]]["content"][0]["text"] = "".join(self._pieces)
            self._open = None
        for index in self._calls.values():
            self.output[index]["arguments"] = "".join(self._arguments[index])
        self._calls.clear()
        self._event(out, "response.failed", {"response": self._response("failed", error={"code": code,
                                                                                           "message": message})})
        return b"".join(out)

    # --- the relay's StreamShaper -------------------------------------------------------------------
    def finish(self, billed_ticks: int | None) -> bytes:
        return b"" if self.worker_error else self.close(None, billed_ticks)[0]

    def fail(self, exc: GatewayError) -> bytes:
        return b"" if self.worker_error else self.failed(exc.code or "server_error", exc.message)


def _copy(item: dict[str, Any], content: list[Any] | None = None) -> dict[str, Any]:
    """A snapshot of ``item`` for an event (the item itself keeps growing)."""
    snap = dict(item)
    if "content" in snap:
        snap["content"] = [dict(p) for p in item["content"]] if content is None else content
    return snap
