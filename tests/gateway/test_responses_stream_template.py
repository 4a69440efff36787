"""The Responses stream's text deltas come from a per-item template: the same bytes as the event built as a
dict, on tricky strings."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.front.responses_stream import ResponsesStream

TRICKY = ["word ", "say \"hi\" é", "back\\slash\\", "日本語 😀", "\u2028\x00\x1f\n\t", "</script>", "x" * 5000]


def chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}


@pytest.mark.parametrize("text", TRICKY)
def test_the_text_delta_template_is_the_event_the_dict_gives(text: str) -> None:
    stream = ResponsesStream("resp_1", {"model": "m", "input": "x"}, 0.0)
    stream.chunk(chunk({"content": "a"}))
    out = stream.chunk(chunk({"content": text}))
    expected = {"item_id": stream.output[0]["id"], "output_index": 0, "content_index": 0, "delta": text,
                "logprobs": [], "type": "response.output_text.delta", "sequence_number": 5}
    assert out == b"event: response.output_text.delta\ndata: " + orjson.dumps(expected) + b"\n\n"
    assert stream.close(None, None)[1]["output"][0]["content"][0]["text"] == "a" + text


def test_created_and_in_progress_carry_the_same_response() -> None:
    stream = ResponsesStream("resp_1", {"model": "m", "input": "x"}, 0.0)
    out = stream.chunk(chunk({"content": "a"})).split(b"\n\n")
    created, progress = (orjson.loads(e.split(b"data: ", 1)[1]) for e in out[:2])
    assert created["type"] == "response.created" and progress["type"] == "response.in_progress"
    assert created["response"] == progress["response"] and created["response"]["status"] == "in_progress"
