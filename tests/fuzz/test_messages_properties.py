"""Properties of the Messages parser on hostile JSON: whatever the bytes, ``Messages.parse`` returns a
chat request the gateway can encode (its payload is that chat body), or raises a GatewayError with a
4xx status, which leaves in Anthropic's error shape; never anything else (never a 500)."""

from __future__ import annotations

import json

import orjson
import requests
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.front.messages import Messages
from gateway.pipeline.request import CHAT
from tests.fuzz.conftest import EXAMPLES, SEED, LiveGateway
from tests.fuzz.test_parse_properties import SETTINGS, TEXT, _json_text

BLOCK_TYPES = ["text", "image", "tool_use", "tool_result", "document", "thinking", "redacted_thinking", "video"]
FIELDS = ["system", "tools", "tool_choice", "stop_sequences", "temperature", "top_p", "top_k", "metadata",
          "stream", "thinking", "output_config", "max_tokens", "cache_control"]


def _obj(fields: dict[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"


@st.composite
def blocks(draw: st.DrawFn) -> str:
    """A content block: a known or unknown type, with fields of any JSON value or plausible ones."""
    fields = {"type": json.dumps(draw(st.sampled_from(BLOCK_TYPES)))} if draw(st.booleans()) else {}
    for name in draw(st.lists(st.sampled_from(["text", "id", "name", "input", "tool_use_id", "content", "is_error",
                                               "source", "cache_control"]), max_size=4)):
        fields[name] = draw(st.sampled_from(['"toolu_1"', '"x"', "{}", '[{"type":"text","text":"y"}]'])
                            | _json_text())
    return _obj(fields)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    fields = {"model": '"grok-code-fast-1"', "max_tokens": draw(st.sampled_from(["16", "0", "-1", '"8"', "1e3"]))}
    content = st.lists(blocks(), max_size=3).map(lambda items: "[" + ",".join(items) + "]") | _json_text()
    message = st.builds(lambda role, c: '{"role":' + role + ',"content":' + c + "}",
                        st.sampled_from(['"user"', '"assistant"']) | TEXT.map(json.dumps), content)
    fields["messages"] = draw(st.lists(message, min_size=1, max_size=4).map(lambda m: "[" + ",".join(m) + "]")
                              | _json_text())
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        fields[name] = draw(_json_text())
    return _obj(fields).encode()


def check(raw: bytes) -> None:
    try:
        parsed = Messages().parse(raw)
    except GatewayError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.message)
        body = orjson.loads(Messages().error_body(exc))
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        return
    assert parsed.kind == CHAT and parsed.model and parsed.payload is not None
    assert orjson.loads(parsed.payload) == parsed.body
    assert isinstance(parsed.body["messages"], list) and isinstance(parsed.body["max_tokens"], int)


@seed(SEED)
@SETTINGS
@given(bodies())
def test_messages_bodies_with_hostile_blocks(raw: bytes) -> None:
    check(raw)


@seed(SEED)
@SETTINGS
@given(_json_text())
def test_any_json_value_as_a_messages_body(text: str) -> None:
    check(text.encode())


@seed(SEED)
@settings(max_examples=EXAMPLES * 3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(raw=bodies(), path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_no_server_error_on_the_messages_routes(live_gateway: LiveGateway, raw: bytes, path: str) -> None:
    response = requests.post(live_gateway.url + path, data=raw, timeout=30,
                             headers={"x-api-key": live_gateway.api_key, "anthropic-version": "2023-06-01",
                                      "Content-Type": "application/json"})
    assert response.status_code < 500 or response.status_code in (502, 503, 504), (
        response.status_code, response.text[:300], raw[:300])
    if response.status_code != 200:
        assert response.json()["type"] == "error", response.text[:300]
    else:
        assert response.headers["content-type"].startswith(("application/json", "text/event-stream"))
