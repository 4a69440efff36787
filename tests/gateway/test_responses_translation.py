"""The Responses translation on its own: a body to Chat Completions, chat chunks to the typed events the
official SDK parses (validated against the SDK's own event models)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway import errors
from gateway.front.responses_input import chat_body, chat_messages, check_body
from gateway.front.responses_stream import ResponsesStream

TOOLS = [{"type": "function", "name": "read_file", "description": "Read a file",
          "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]


def translate(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    items = check_body(body)
    return chat_body(body, chat_messages(history or [], items, body.get("instructions")))


def test_a_string_input_with_instructions_and_options() -> None:
    chat = translate({"model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 9,
                      "temperature": 0.5, "top_p": 0.9, "reasoning": {"effort": "low"}, "user": "u1",
                      "prompt_cache_key": "conv-7", "tools": TOOLS, "tool_choice": {"type": "function",
                                                                                   "name": "read_file"},
                      "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"},
                                          "strict": True}}, "metadata": {"a": "b"}, "stream": True})
    assert chat["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert chat["max_tokens"] == 9 and chat["temperature"] == 0.5 and chat["top_p"] == 0.9
    assert chat["reasoning_effort"] == "low" and chat["user"] == "u1" and chat["prompt_cache_key"] == "conv-7"
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "read_file", "description": "Read a file", "parameters": TOOLS[0]["parameters"]}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "read_file"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}, "strict": True}}
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert "metadata" not in chat


def test_a_tool_round_trip_becomes_one_assistant_message_and_a_tool_message() -> None:
    chat = translate({"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "open a.py"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sure."}]},
        {"type": "function_call", "call_id": "c1", "name": "read_file", "arguments": "{\"path\":\"a.py\"}"},
        {"type": "function_call", "call_id": "c2", "name": "read_file", "arguments": "{\"path\":\"b.py\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "print(1)"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "x"}]},
        {"type": "reasoning", "summary": []},
    ]})
    assert chat["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "open a.py"}]},
        {"role": "assistant", "content": "Sure.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.py\"}"}},
            {"id": "c2", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"b.py\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "print(1)"},
        {"role": "tool", "tool_call_id": "c2", "content": "x"},
    ]


def test_a_continued_conversation_is_the_same_prefix_as_the_whole_one() -> None:
    turn1 = [{"type": "message", "role": "user", "content": "one"}]
    out1 = [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "ok", "annotations": [], "logprobs": []}]}]
    chained = translate({"model": "m", "input": "two", "previous_response_id": "resp_1"}, history=turn1 + out1)
    whole = translate({"model": "m", "input": [*turn1, {"role": "assistant", "content": "ok"},
                                               {"role": "user", "content": "two"}]})
    assert chained["messages"] == whole["messages"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 3}, "input"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": [{"type": "web_search_call"}]}, "input[0].type"),
    ({"model": "m", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
     "input[0].call_id"),
    ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
    ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "m", "input": "x", "max_output_tokens": "9"}, "max_output_tokens"),
    ({"model": "m", "input": "x", "temperature": 3}, "temperature"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
    ({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
    ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata.k"),
    ({"model": "m", "input": "x", "store": "yes"}, "store"),
    ({"model": "m", "input": "x", "previous_response_id": 7}, "previous_response_id"),
    ({"model": "m", "input": "x", "frobnicate": True}, "frobnicate"),
    ({"model": "m", "input": "x", "background": True}, "background"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
])
def test_bad_input_is_a_400_naming_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.GatewayError) as caught:
        translate(body)
    assert caught.value.status == 400 and caught.value.param == param


def _events(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.split(b"\n\n"):
        if block:
            head, data = block.split(b"\n", 1)
            event = orjson.loads(data.removeprefix(b"data: "))
            assert head == b"event: " + event["type"].encode()
            events.append(event)
    return events


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "served", "choices": choices, **extra}


def test_a_stream_becomes_the_sdks_typed_events_in_order() -> None:
    stream = ResponsesStream("resp_1", {"model": "m", "input": "x"}, 1_700_000_000.0)
    chat = [chunk({"role": "assistant", "reasoning_content": "think"}), chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "read_file", "arguments": "{\"pa"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "th\":1}"}}]}, finish="tool_calls"),
            chunk(usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                         "prompt_tokens_details": {"cached_tokens": 4}})]
    raw = b"".join(stream.chunk(c) for c in chat)
    tail, final = stream.close(None, 1234)
    events = _events(raw + tail)
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for event in events:
        if "response" not in event:  # the lifecycle events carry the Response, checked below
            adapter.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert events[0]["response"]["output"] == [] and events[0]["response"]["status"] == "in_progress"
    done = events[-1]["response"]
    assert done == final and done["status"] == "completed" and done["model"] == "served"
    assert [i["type"] for i in done["output"]] == ["reasoning", "message", "function_call"]
    assert done["output"][1]["content"][0]["text"] == "Hello"
    assert done["output"][2]["arguments"] == "{\"path\":1}" and done["output"][2]["call_id"] == "call_1"
    assert done["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 5,
                             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15,
                             "cost_in_usd_ticks": 1234}


def test_a_cut_stream_ends_with_response_failed() -> None:
    stream = ResponsesStream("resp_1", {"model": "m", "input": "x"}, 1_700_000_000.0)
    raw = stream.chunk(chunk({"content": "Hel"})) + stream.failed("server_error", "cut")
    events = _events(raw)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "cut"}
    assert events[-1]["response"]["status"] == "failed"


def test_a_length_cut_is_incomplete() -> None:
    stream = ResponsesStream("resp_1", {"model": "m", "input": "x"}, 1_700_000_000.0)
    stream.chunk(chunk({"content": "Hel"}, finish="length"))
    tail, final = stream.close({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, None)
    assert _events(tail)[-1]["type"] == "response.incomplete"
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
