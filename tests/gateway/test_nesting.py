"""Deeply nested JSON is a 400 in OpenAI's shape at parse time, never a 500 when the body is re-encoded."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from gateway.front import json_depth as nesting
from tests.conftest import MODEL
from tests.gateway.test_errors import assert_openai_error


def nested(depth: int) -> Any:
    """A value nesting objects and arrays ``depth`` levels deep (itself included), parsed by orjson
    from text (orjson encodes 254 levels at most, and parses 1,024)."""
    head = "".join('{"k":' if level % 2 == 0 else "[" for level in range(depth))
    tail = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return orjson.loads(head + '"leaf"' + tail)


@pytest.mark.parametrize("depth", [3, 5, 127, 128, 129, 254, 255, 1000])
def test_depth_is_measured_exactly(depth: int) -> None:
    body = {"model": MODEL, "deep": nested(depth - 1), "wide": [[], {"a": 1}, "x"] * 50}
    assert nesting.exceeds(body, depth) is False
    assert nesting.exceeds(body, depth - 1) is True


@pytest.mark.parametrize("depth", [1, 2, 127, 128, 129, 200, 254, 255, 1000])
@pytest.mark.parametrize("limit", [1, 64, 128, 253])
def test_the_encoder_answers_as_the_walk_does(depth: int, limit: int) -> None:
    body = {"model": MODEL, "deep": nested(depth - 1), "wide": [[], {"a": 1}, "x"] * 50}
    assert nesting.exceeds_encoded(body, limit) is nesting.exceeds(body, limit)
    assert nesting.too_deep(body, 1 << 20, limit) is nesting.too_deep(body, 10, limit) is nesting.exceeds(body, limit)


def test_strings_and_scalars_do_not_count() -> None:
    assert nesting.exceeds({"a": "[[[[{{{{" * 100, "b": 1, "c": None}, 1) is False
    assert nesting.exceeds("[[[", 0) is False
    assert nesting.exceeds([], 1) is False and nesting.exceeds([[]], 1) is True


def _json(body: dict[str, Any]) -> bytes:
    """``body`` as JSON text; values deeper than orjson encodes are spliced in as text."""
    deep: list[str] = []

    def encodable(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: encodable(v) for k, v in value.items()}
        if isinstance(value, list):
            return [encodable(v) for v in value]
        if isinstance(value, Deep):
            deep.append(value.text)
            return f"@@{len(deep) - 1}@@"
        return value

    text = orjson.dumps(encodable(body)).decode()
    for i, part in enumerate(deep):
        text = text.replace(f'"@@{i}@@"', part)
    return text.encode()


class Deep:
    def __init__(self, depth: int) -> None:
        head = "".join('{"k":' if level % 2 == 0 else "[" for level in range(depth))
        tail = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
        self.text = head + '"leaf"' + tail


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, **extra}


@pytest.mark.parametrize(
    "body",
    [
        # tools nested past orjson's encoder limit, and a field that makes the gateway re-encode the body
        _chat(tools=[{"type": "function", "function": {"name": "f", "parameters": Deep(300)}}], stream=True,
              stream_options={"include_usage": False}),
        # content parts, deeper than the bound but still encodable
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                                    "extra": Deep(200)}]}]},
        # tool-call arguments given as JSON instead of a string
        _chat(messages=[{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": Deep(1000)}}]},
            {"role": "user", "content": "x"}]),
        # a large body (checked by the encoder, not the walk), 129 levels
        _chat(padding="x" * 40_000, metadata_deep=Deep(128)),
    ],
    ids=["tools-300-stream", "content-parts-200", "tool-call-arguments-1000", "large-129"],
)
async def test_deep_bodies_are_400(gateway: Any, api_key: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        gateway.url + "/v1/chat/completions", data=_json(body),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        err = assert_openai_error(await resp.json())
        assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"
        assert "128 levels" in err["message"]


@pytest.mark.parametrize("padding", [0, 40_000], ids=["small", "large"])
async def test_nesting_within_the_bound_is_served(gateway: Any, api_key: str, padding: int) -> None:
    body = _chat(metadata_deep=Deep(127), stream=True, stream_options={"include_usage": False}, padding="x" * padding)
    async with aiohttp.ClientSession() as http, http.post(
        gateway.url + "/v1/chat/completions", data=_json(body),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200
        assert b"data: [DONE]" in await resp.read()
