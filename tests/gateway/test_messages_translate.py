"""The Messages → Chat Completions translation and the chat stream → Anthropic events translation, as pure
functions (the end-to-end behaviour through the official SDK is in test_anthropic_sdk.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway import errors
from gateway.front.messages_count import GENERATION_ONLY, check_count_body
from gateway.front.messages_reply import anthropic_usage, message
from gateway.front.messages_request import check_max_tokens, to_chat
from gateway.front.messages_stream import MessagesStream

TOOL = {"name": "read_file", "description": "Read a file", "input_schema": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}


def chat(body: dict[str, Any]) -> dict[str, Any]:
    return to_chat(body, "m", check_max_tokens(body))


def test_a_full_conversation_translates() -> None:
    body = {"model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "be brief",
                                                        "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "open main.py"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "x"},
                                                  {"type": "text", "text": "Sure."},
                                                  {"type": "tool_use", "id": "toolu_1", "name": "read_file",
                                                   "input": {"path": "main.py"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": [{"type": "text", "text": "print(1)"}]},
                                             {"type": "text", "text": "and now?",
                                              "cache_control": {"type": "ephemeral"}}]},
            ],
            "tools": [TOOL], "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 5,
            "metadata": {"user_id": "u-1"}, "stream": True}
    out = chat(body)
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "open main.py"},
        {"role": "assistant", "content": "Sure.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "read_file", "arguments": '{"path":"main.py"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "print(1)"},
        {"role": "user", "content": "and now?"},
    ]
    assert out["tools"] == [{"type": "function", "function": {"name": "read_file", "parameters": TOOL["input_schema"],
                                                              "description": "Read a file"}}]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["stop"] == ["END"] and out["max_tokens"] == 10 and out["user"] == "u-1"
    assert (out["temperature"], out["top_p"], out["top_k"]) == (0.5, 0.9, 5)
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}


def test_named_tool_choice_and_images() -> None:
    out = chat({"model": "m", "max_tokens": 1, "tools": [TOOL], "tool_choice": {"type": "tool", "name": "read_file"},
                "messages": [{"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "text", "text": "what is it?"}]}]})
    assert out["tool_choice"] == {"type": "function", "function": {"name": "read_file"}}
    assert out["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                             {"type": "text", "text": "what is it?"}]


BAD = [
    ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 10**9, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 5}, "messages"),
    ({"max_tokens": 5, "messages": "hi"}, "messages"),
    ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages.0.content.0.type"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0.type"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]}]},
     "messages.0.content.0.tool_use_id"),
    ({"max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]},
        {"role": "user", "content": "ok"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}]}]},
     "messages.2.content.0.tool_use_id"),  # its tool_use is not in the previous message
    ({"max_tokens": 5, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "a", "name": "f", "input": "{}"}]}]}, "messages.0.content.0.input"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": 5}, "system"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "temperature": 2}, "temperature"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stop_sequences": "END"}, "stop_sequences"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f"}]},
     "tools.0.input_schema"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "maybe"}},
     "tool_choice.type"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "tool", "name": "g"}},
     "tool_choice.name"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "metadata": {"user_id": 7}},
     "metadata.user_id"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "sometimes"}},
     "thinking.type"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
      "thinking": {"type": "enabled", "budget_tokens": "lots"}}, "thinking.budget_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "output_config": {"effort": "huge"}},
     "output_config.effort"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
      "output_config": {"format": {"type": "json_schema", "schema": []}}}, "output_config.format.schema"),
]


@pytest.mark.parametrize(("body", "param"), BAD)
def test_bad_input_names_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.GatewayError) as info:
        chat({"model": "m", **body})
    assert info.value.status == 400 and info.value.param == param
    assert info.value.message.startswith(param + ":")


def test_usage_is_disjoint_and_carries_the_cost() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
             "prompt_tokens_details": {"cached_tokens": 64}}
    assert anthropic_usage(usage, 1234) == {"input_tokens": 36, "cache_creation_input_tokens": 0,
                                            "cache_read_input_tokens": 64, "output_tokens": 7,
                                            "cost_in_usd_ticks": 1234}


def test_whole_answer_with_a_tool_call() -> None:
    answer = {"id": "chatcmpl-1", "model": "served", "choices": [{"index": 0, "finish_reason": "tool_calls",
                                                                  "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a"}'}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}
    msg = orjson.loads(message("msg_abc", "m", answer, None, 55))
    assert msg["id"] == "msg_abc" and msg["model"] == "served" and msg["stop_reason"] == "tool_use"
    assert msg["content"] == [{"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"path": "a"}}]
    stopped = dict(answer, choices=[{"finish_reason": "stop", "stop_reason": "END", "message": {"content": "hi"}}])
    msg = orjson.loads(message("msg_abc", "m", stopped, ["END"], 55))
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "END")


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def test_stream_events_in_order() -> None:
    s = MessagesStream("msg_x", "m", {"messages": [{"role": "user", "content": "hello there"}]})
    raw = s.chunk({"model": "served", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    raw += s.chunk({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    raw += s.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]})
    for piece in ('{"a":', "1}"):
        call = {"index": 0, "function": {"arguments": piece}}
        raw += s.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    raw += s.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    raw += s.chunk({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
    raw += s.finish(99)
    names = [n for n, _ in events(raw)]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    got = events(raw)
    assert got[0][1]["message"]["model"] == "served" and got[0][1]["message"]["id"] == "msg_x"
    assert got[3][1]["delta"] == {"type": "text_delta", "text": "Hi"}
    assert got[5][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    assert got[7][1] == {"type": "content_block_delta", "index": 1,
                         "delta": {"type": "input_json_delta", "partial_json": "1}"}}
    assert got[9][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[9][1]["usage"] == {"input_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                  "output_tokens": 4, "cost_in_usd_ticks": 99}


@pytest.mark.parametrize("name", GENERATION_ONLY)
def test_count_tokens_refuses_generation_settings_as_anthropic_does(name: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert check_count_body(body) == "m"
    with pytest.raises(errors.GatewayError) as refused:
        check_count_body({**body, name: 1})
    assert (refused.value.status, refused.value.param) == (400, name)
    assert refused.value.message == f"{name}: Extra inputs are not permitted"
