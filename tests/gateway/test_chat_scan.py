"""The chat adapter's one pass over the messages answers as the four walks it replaced did.

``chat_scan.scan`` gives routing's canonical bytes and opening (``prefix.chat_canonical``), the prompt
estimate (``estimate_prompt_tokens``), the nesting bound (``json_depth.exceeds``, 128 levels) and the
messages' checks: the parse with it must end exactly as the parse without it (same request, or the same
error), on any body.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xxhash import xxh3_64_hexdigest

from bench.agent_bodies import bodies
from billing.usage_record import estimate_prompt_tokens
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.front import chat_scan
from gateway.front.chat import ChatCompletions, _check
from gateway.front.json_depth import MAX_DEPTH, encoded_within, exceeds
from gateway.front.openai_body import parse_body
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal
from gateway.pipeline.request import CHAT
from gateway.routing.pool import WorkerPool
from gateway.routing.prefix import block_hashes, chat_canonical, root_hash
from gateway.routing.router import PrefixRouter
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.upstream.worker_probe import WorkerProbe

ADAPTER = ChatCompletions()


def _outcome(parse: Any, raw: bytes) -> tuple[Any, ...]:
    try:
        r = parse(raw)
    except GatewayError as exc:
        return ("error", exc.status, exc.body_bytes())
    return ("ok", r.kind, r.body, r.model, r.stream, r.include_usage)


def _old_parse(raw: bytes) -> Any:
    return parse_body(raw, CHAT, _check)  # no scan: the nesting check, then the checks, as before


def assert_same_as_the_walks(raw: bytes) -> None:
    new, old = _outcome(ADAPTER.parse, raw), _outcome(_old_parse, raw)
    assert new == old
    if new[0] == "ok":
        prompt = ADAPTER.parse(raw).prompt
        body = orjson.loads(raw)
        if prompt is not None:
            assert (prompt.canonical, prompt.opening) == chat_canonical(body)
            assert prompt.tokens == estimate_prompt_tokens(body)


@pytest.mark.parametrize("size", [1, 32, 128])
def test_agent_bodies_scan_to_the_canonical_bytes_and_the_estimate(size: int) -> None:
    for raw in bodies(size * 1024, False):
        prompt = ADAPTER.parse(raw).prompt
        assert prompt is not None
        body = orjson.loads(raw)
        assert (prompt.canonical, prompt.opening) == chat_canonical(body)
        assert prompt.opening > 0
        assert prompt.tokens == estimate_prompt_tokens(body)


def test_the_canonical_bytes_stay_what_they_were() -> None:
    """Routing's index holds block hashes of these bytes: a change of the canonical form (or of the
    hashing) leaves every worker's index useless after an upgrade. Pinned on one body."""
    body = {"model": "m", "tools": [{"type": "function", "function": {"name": "read", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}}}}], "messages": [
        {"role": "system", "content": "You are a coding agent. " * 40},
        {"role": "user", "content": [{"type": "text", "text": "fix the bug "}, {"type": "image_url",
                                                                               "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read", "arguments": '{"path": "a.py"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "def f():\n    return 1\n" * 30},
        {"role": "user", "content": "thanks, now the tests \u00e9\u4e2d"}]}
    prompt = ADAPTER.parse(orjson.dumps(body)).prompt
    assert prompt is not None
    assert (prompt.canonical, prompt.opening) == chat_canonical(body)
    assert (xxh3_64_hexdigest(prompt.canonical), len(prompt.canonical), prompt.opening) == (
        "7cb181557e21bbb4", 1885, 1183)
    hashes = block_hashes(prompt.canonical, root_hash("m", ""), 64, 1024)
    assert xxh3_64_hexdigest(hashes) == "a73814de0f622118"


# Any JSON, small; and chat-shaped bodies where any field may hold anything.
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=6))
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                     max_leaves=6)
_text = st.text(max_size=12)
_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _text}, optional={"cache_control": _json}),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_audio"])},
                          optional={"text": st.one_of(_text, _json), "image_url": _json}),
    _json)
_function = st.fixed_dictionaries({}, optional={"name": st.one_of(_text, _json), "arguments": st.one_of(_text, _json),
                                                "extra": _json})
_call = st.one_of(st.fixed_dictionaries({"id": st.one_of(_text, _json), "type": st.one_of(st.just("function"), _json),
                                         "function": st.one_of(_function, _json)}, optional={"extra": _json}),
                  _json)
_message = st.fixed_dictionaries({}, optional={
    "role": st.one_of(st.sampled_from(["system", "developer", "user", "assistant", "tool"]), _json),
    "content": st.one_of(st.none(), _text, st.lists(_part, max_size=3), _json),
    "tool_calls": st.one_of(st.lists(_call, max_size=2), _json),
    "tool_call_id": st.one_of(_text, _json),
    "name": st.one_of(_text, _json),
    "extra": _json})
_good_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
     "content": st.one_of(st.none(), _text, st.lists(_part, max_size=3))},
    optional={"tool_calls": st.one_of(st.lists(_call, max_size=2), _json), "tool_call_id": _text,
              "name": _text, "extra": _json})
_body = st.fixed_dictionaries(
    {"model": st.just("m")},
    optional={"messages": st.one_of(st.lists(st.one_of(_good_message, _message, _json), max_size=5), _json),
              "tools": st.one_of(st.lists(_json, max_size=3), _json), "prompt": st.one_of(_text, _json),
              "metadata": _json, "stream": st.booleans()})
_good_body = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(_good_message, min_size=1, max_size=6)},
    optional={"tools": st.lists(_json, max_size=3), "metadata": _json})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_body)
def test_any_body_parses_as_it_did_without_the_scan(body: dict[str, Any]) -> None:
    assert_same_as_the_walks(orjson.dumps(body))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_good_body)
def test_chat_shaped_bodies_are_scanned_to_what_the_walks_give(body: dict[str, Any]) -> None:
    raw = orjson.dumps(body)
    assert_same_as_the_walks(raw)
    assert ADAPTER.parse(raw).prompt is not None  # these pass the checks: the scan answered for them


def _deep(depth: int) -> bytes:
    """JSON text nesting objects and arrays ``depth`` levels deep (itself included)."""
    head = "".join('{"k":' if level % 2 == 0 else "[" for level in range(depth))
    tail = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return (head + '"leaf"' + tail).encode()


_HOLE = "@@deep@@"
_SYSTEM = {"role": "system", "content": "sys"}
# Bodies with a hole, and the depth of the value that fills it (the body itself is depth 1).
_PLACES = {
    "top-level field": ({"model": "m", "messages": [_SYSTEM], "metadata": _HOLE}, 2),
    "tools": ({"model": "m", "messages": [_SYSTEM], "tools": [_HOLE]}, 3),
    "tool parameters": ({"model": "m", "tools": [{"type": "function", "function": {"name": "f", "parameters": _HOLE}}],
                         "messages": [{"role": "user", "content": "x"}]}, 5),
    "message field": ({"model": "m", "messages": [_SYSTEM, {"role": "user", "content": "x", "audio": _HOLE}]}, 4),
    "tool_call_id": ({"model": "m", "messages": [{"role": "tool", "tool_call_id": _HOLE, "content": "x"}]}, 4),
    "role": ({"model": "m", "messages": [{"role": _HOLE, "content": "x"}]}, 4),
    "content": ({"model": "m", "messages": [{"role": "user", "content": _HOLE}]}, 4),
    "content part": ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, _HOLE]}]},
                     5),
    "text part field": ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a", "cache_control": _HOLE}]}]}, 6),
    "image part": ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url",
                                                                          "image_url": _HOLE}]}]}, 6),
    "tool_calls": ({"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": _HOLE}]}, 4),
    "tool call": ({"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [_HOLE]}]}, 5),
    "tool call id": ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": _HOLE, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, 6),
    "function": ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": _HOLE}]}]}, 6),
    "arguments": ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": _HOLE}}]}]}, 7),
    "function name": ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": _HOLE, "arguments": "{}"}}]}]}, 7),
    "function field": ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}", "strict": _HOLE}}]}]}, 7),
}


@pytest.mark.parametrize("place", sorted(_PLACES))
@pytest.mark.parametrize("total", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 200, 300])
def test_the_nesting_bound_is_exact_wherever_the_depth_is(place: str, total: int) -> None:
    template, at = _PLACES[place]
    raw = orjson.dumps(template).replace(orjson.dumps(_HOLE), _deep(total - at + 1))
    assert exceeds(orjson.loads(raw), MAX_DEPTH) is (total > MAX_DEPTH)
    new, old = _outcome(ADAPTER.parse, raw), _outcome(_old_parse, raw)
    assert new == old
    assert (new[0] == "error" and b"128 levels" in new[2]) is (total > MAX_DEPTH)


@pytest.mark.parametrize("depth", [1, 2, 126, 127, 128, 129, 200, 254, 255, 1000])
@pytest.mark.parametrize("limit", [1, 64, MAX_DEPTH - 1, MAX_DEPTH, 253])
def test_encoded_within_is_the_walk_and_the_encoding(depth: int, limit: int) -> None:
    value = orjson.loads(_deep(depth))
    encoded = encoded_within(value, limit, orjson.OPT_SORT_KEYS)
    assert (encoded is None) is exceeds(value, limit)
    if encoded is not None:
        assert encoded == orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def test_a_body_that_fails_the_checks_is_not_scanned() -> None:
    for body in ({"model": "m"}, {"model": "m", "messages": []}, {"model": "m", "messages": [{"content": "x"}]},
                 {"model": "m", "messages": [{"role": "user", "content": {"a": 1}}]},
                 {"model": "m", "messages": [{"role": "user"}, "text"]}):
        assert chat_scan.scan(body) is None
        with pytest.raises(GatewayError):
            _check(body)


async def test_the_router_hashes_the_scans_bytes_and_lets_go_of_them() -> None:
    raw = bodies(128 * 1024, False)[-1]
    body = orjson.loads(raw)
    principal = Principal("k", "o", "o", "salt", True)
    async with WorkerProbe.build(Settings()) as http:
        router = PrefixRouter(WorkerPool(http), KeySpace("gwtest-scan"), MemoryState(), MemoryState())
        request = ADAPTER.parse(raw)
        prompt = request.prompt
        assert prompt is not None and request.prompt_tokens == estimate_prompt_tokens(body)
        walked = router.note_for(principal, body, {}, True, request.model)  # the router's own walk
        scanned = router.note_for(principal, body, {}, True, request.model, prompt)
        assert (scanned.key, scanned.hint, scanned.salt) == (walked.key, walked.hint, walked.salt)
        ex = Exchange(request_id="r1", principal=principal, request=request, path="/v1/chat/completions", payload=raw)
        router.plan(ex, MemoryState().round_trip())
        # The canonical bytes (as large as the prompt) are not held for the rest of the request; the
        # estimate the metering stages read at the end is.
        assert request.prompt is None and request.prompt_tokens == estimate_prompt_tokens(body)
