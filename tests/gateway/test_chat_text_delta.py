"""The byte-level fast path of the stream translations: a plain text delta read from the chunk's bytes
(``chat_text_delta.plain_text``) gives exactly the events the full parse gives, on tricky strings and
in every encoding a worker may use; anything else is left to the full parse."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gateway.front.chat_text_delta import plain_text
from gateway.front.messages_stream import MessagesStream
from gateway.front.responses_stream import ResponsesStream

TRICKY = [
    "word ", "say \"hi\"", "back\\slash", "ends in a backslash\\", "\\\"", "\\\\\"", "\"", "\\", "é à ç",
    "日本語のテキスト", "emoji 😀🚀", "\u2028\u2029", "nul \x00 and \x01 \x1f", "\n\t\r", "</script>", "a/b",
    '{"json": [1, 2]}', '"finish_reason":"stop"', '"choices":[{"index":0,"delta":{"content":"x', "data: [DONE]\n\n",
    '"error": {"message": "no"}', "\ud7ff\ue000\uffff", "x" * 5000,
]


def vllm_chunk(delta: dict[str, Any], finish: str | None = None, **root: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **root}


ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "orjson": orjson.dumps,
    "json-ascii": lambda obj: json.dumps(obj, separators=(",", ":")).encode(),  # \u00e9, \" escapes
    "json-utf8": lambda obj: json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(),
    "sim": lambda obj: orjson.dumps({**obj, "system_fingerprint": "fp", "usage": None}),  # workersim's shape
}


@pytest.mark.parametrize("encode", ENCODERS.values(), ids=ENCODERS.keys())
@pytest.mark.parametrize("text", TRICKY)
def test_plain_text_reads_the_delta_as_a_parse_does(text: str, encode: Callable[[Any], bytes]) -> None:
    assert plain_text(encode(vllm_chunk({"content": text}))) == text


NOT_PLAIN = {
    "finish": orjson.dumps(vllm_chunk({"content": "a"}, "stop")),
    "usage": orjson.dumps(vllm_chunk({"content": "a"}, usage={"prompt_tokens": 1})),
    "usage first": b'{"usage":{"prompt_tokens":1},"choices":[{"index":0,"delta":{"content":"a"}}]}',
    "role": orjson.dumps(vllm_chunk({"role": "assistant", "content": "a"})),
    "reasoning after": orjson.dumps(vllm_chunk({"content": "a", "reasoning_content": "b"})),
    "tool calls": orjson.dumps(vllm_chunk({"content": "a", "tool_calls": [{"index": 0}]})),
    "second choice": orjson.dumps({"choices": [{"index": 0, "delta": {"content": "a"}},
                                               {"index": 1, "delta": {"content": "b"}}]}),
    "error": orjson.dumps({**vllm_chunk({"content": "a"}), "error": "boom"}),
    "error first": b'{"error":null,"choices":[{"index":0,"delta":{"content":"a"}}]}',
    "logprobs": orjson.dumps({"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": []}}]}),
    "two finishes": b'{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null,"finish_reason":"stop"}]}',
    "spaced": json.dumps(vllm_chunk({"content": "a"})).encode(),
    "null content": orjson.dumps(vllm_chunk({"content": None})),
    "other index": orjson.dumps({"choices": [{"index": 1, "delta": {"content": "a"}}]}),
    "raw control char": b'{"choices":[{"index":0,"delta":{"content":"a\x01b"}}]}',
    "bad escape": b'{"choices":[{"index":0,"delta":{"content":"a\\xb"}}]}',
    "lone surrogate": b'{"choices":[{"index":0,"delta":{"content":"\\ud800"}}]}',
    "bad utf-8": b'{"choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}',
    "unterminated": b'{"choices":[{"index":0,"delta":{"content":"abc\\"}}]}',
    "not json": b"[DONE]",
}


@pytest.mark.parametrize("payload", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_anything_but_a_plain_text_delta_is_left_to_the_parse(payload: bytes) -> None:
    assert plain_text(payload) is None


def _events() -> list[bytes]:
    """A stream mixing plain deltas (every encoding) with what takes the full parse."""
    events = [orjson.dumps(vllm_chunk({"role": "assistant", "content": ""}))]
    for i, text in enumerate(TRICKY):
        encode = list(ENCODERS.values())[i % len(ENCODERS)]
        events.append(encode(vllm_chunk({"content": text})))
        if i == 5:
            events.append(orjson.dumps(vllm_chunk({"reasoning_content": "thinking about it"})))
        if i == 9:
            events.append(orjson.dumps(vllm_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                                   "function": {"name": "f", "arguments": "{\""}}]})))
        if i == 12:
            events.append(orjson.dumps(vllm_chunk({"content": ""})))
    events.append(orjson.dumps(vllm_chunk({"content": "the end"}, "stop")))
    return events


def _shapers() -> dict[str, Callable[[], Any]]:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return {"messages": lambda: MessagesStream("msg_1", "m", body),
            "messages thinking": lambda: MessagesStream("msg_1", "m", body, thinking=True),
            "responses": lambda: ResponsesStream("resp_1", {"model": "m", "input": "x"}, 0.0)}


@pytest.mark.parametrize("make", _shapers().values(), ids=_shapers().keys())
def test_the_byte_path_writes_the_same_events_as_the_parse(make: Callable[[], Any]) -> None:
    stream = make()
    fast_hits = 0
    for payload in _events():
        twin = copy.deepcopy(stream)  # the same state (and item ids), through the full parse
        slow = twin.chunk(orjson.loads(payload))
        fast = stream.chunk_bytes(payload)
        if fast is None:  # not a plain delta of an open text block: the parse it is (new items get new ids)
            stream = twin
            continue
        fast_hits += 1
        assert fast == slow
        assert copy.deepcopy(stream).finish(7) == copy.deepcopy(twin).finish(7)  # and the same state after it
    assert fast_hits >= len(TRICKY) - 6  # the plain deltas of an open text block took the byte path
    usage = {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 40, "total_tokens": 43}}
    assert stream.chunk_bytes(orjson.dumps(usage)) is None
    stream.chunk(usage)
    closing = stream.finish(7)
    assert b"43" in closing or b'"output_tokens":40' in closing


def test_the_responses_text_delta_template_is_the_event_the_dict_gives() -> None:
    stream = ResponsesStream("resp_1", {"model": "m", "input": "x"}, 0.0)
    stream.chunk(vllm_chunk({"content": "a"}))
    out = stream.chunk(vllm_chunk({"content": "say \"hi\" é"}))
    item_id = stream.output[0]["id"]
    expected = {"item_id": item_id, "output_index": 0, "content_index": 0, "delta": "say \"hi\" é", "logprobs": [],
                "type": "response.output_text.delta", "sequence_number": 5}
    assert out == b"event: response.output_text.delta\ndata: " + orjson.dumps(expected) + b"\n\n"
