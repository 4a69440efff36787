"""Hostile bodies on the raw ASGI endpoints (/v1/chat/completions, /v1/completions, not in the OpenAPI
schema): whatever passes or fails the parser, the whole request path answers without a server error."""

from __future__ import annotations

import requests
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import EXAMPLES, SEED, LiveGateway
from tests.fuzz.test_parse_properties import bodies

PATHS = st.sampled_from(["/v1/chat/completions", "/v1/completions"])


@seed(SEED)
@settings(max_examples=EXAMPLES * 6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(raw=bodies(), path=PATHS)
def test_no_server_error(live_gateway: LiveGateway, raw: bytes, path: str) -> None:
    response = requests.post(live_gateway.url + path, data=raw, timeout=30,
                             headers={"Authorization": f"Bearer {live_gateway.api_key}",
                                      "Content-Type": "application/json"})
    assert response.status_code < 500 or response.status_code in (502, 503, 504), (
        response.status_code, response.text[:300], raw[:300])
    assert response.headers["content-type"].startswith(("application/json", "text/event-stream"))


@st.composite
def servable(draw: st.DrawFn) -> bytes:
    """A request the parser accepts, with hostile values in every field it does not check."""
    from tests.fuzz.test_parse_properties import _json_text

    fields = {"model": '"grok-code-fast-1"'}
    content = st.sampled_from(['"x"', '"\\u0000"', '[]', '[{"type":"text","text":"x"}]', '[{"type":5}]',
                               '[{"type":"image_url","image_url":{"url":7}}]', '["x", 1, null]']) | _json_text()
    fields["messages"] = "[" + ",".join(
        draw(st.lists(st.builds(lambda role, c: '{"role":' + role + ',"content":' + c + "}",
                                st.sampled_from(['"user"', '"system"', '"assistant"', '"tool"', '"\\u0000"']),
                                content), min_size=1, max_size=3))) + "]"
    big = st.sampled_from(["1", "4096", "2147483648", "9223372036854775807", "18446744073709551615"])
    for name in draw(st.lists(st.sampled_from(["max_tokens", "max_completion_tokens", "n"]), max_size=2)):
        fields[name] = draw(big)
    for name in draw(st.lists(st.sampled_from(["tools", "tool_choice", "user", "metadata", "stop", "seed",
                                               "response_format", "logit_bias", "stream_options"]), max_size=3)):
        fields[name] = draw(_json_text())
    if draw(st.booleans()):
        fields["stream"] = "true"
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


@seed(SEED)
@settings(max_examples=EXAMPLES * 6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(raw=servable())
def test_servable_requests_with_hostile_extras(live_gateway: LiveGateway, raw: bytes) -> None:
    response = requests.post(live_gateway.url + "/v1/chat/completions", data=raw, timeout=30,
                             headers={"Authorization": f"Bearer {live_gateway.api_key}",
                                      "Content-Type": "application/json"})
    assert response.status_code < 500 or response.status_code in (502, 503, 504), (
        response.status_code, response.text[:300], raw[:300])
