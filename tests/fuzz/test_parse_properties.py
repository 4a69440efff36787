"""Properties of the request parser on hostile JSON: deep nesting, huge numbers, NUL bytes, lone
surrogates, wrong types, bodies that are not objects, bytes that are not JSON.

Whatever the bytes, ``parse`` returns a ParsedRequest whose body the gateway can re-encode, or raises
a GatewayError with a 4xx status and OpenAI's error body; never anything else."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.front.chat import ChatCompletions
from gateway.front.completions import Completions
from gateway.pipeline.request import CHAT, COMPLETIONS, ParsedRequest
from tests.fuzz.conftest import EXAMPLES, SEED

SETTINGS = settings(max_examples=EXAMPLES * 6, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Numbers JSON allows and orjson may not hold: past 64 bits, past a double, negative zero, tiny.
HUGE_NUMBERS = st.sampled_from(["18446744073709551616", "-9223372036854775809", "1" * 400, "1e999", "-1e999",
                                "-0", "1e-999", "0.0000000000000000000000001", "123456789012345678901234567890.5"])
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    ["\x00", "a\x00b", "\u2028", "\ufeff", "\U0010ffff", ""])


def _scalars() -> st.SearchStrategy[str]:
    """JSON text of one scalar."""
    return st.one_of(st.just("null"), st.just("true"), st.just("false"), HUGE_NUMBERS,
                     st.integers().map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
                     TEXT.map(json.dumps), st.sampled_from(['"\\ud800"', '"\\udc00x"', '"\\u0000"', '"\\\\"']))


def _nested(depth: int, leaf: str) -> str:
    """``leaf`` inside ``depth`` levels of alternating arrays and objects."""
    head = "".join('{"k":' if level % 2 else "[" for level in range(depth))
    tail = "".join("}" if level % 2 else "]" for level in reversed(range(depth)))
    return head + leaf + tail


def _json_text() -> st.SearchStrategy[str]:
    """JSON text of any value: scalars, containers of them, and nesting from shallow to past orjson's limits."""
    values = st.recursive(
        _scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
            st.dictionaries(TEXT, children, max_size=4).map(
                lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"),
        ),
        max_leaves=12,
    )
    deep = st.builds(_nested, st.integers(100, 1100), _scalars())
    return st.one_of(values, deep)


FIELDS = ["model", "messages", "prompt", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n",
          "temperature", "top_p", "presence_penalty", "frequency_penalty", "tools", "user", "content", "role"]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A JSON object with the fields the parser reads (some well-formed, most not) and extra ones."""
    fields: dict[str, str] = {}
    if draw(st.booleans()):
        fields["model"] = draw(st.sampled_from(['"grok-code-fast-1"', '""', '"a\\u0000b"']) | _json_text())
    if draw(st.booleans()):
        message = st.builds(lambda role, content: '{"role":' + role + ',"content":' + content + "}",
                            st.sampled_from(['"user"', '"system"']) | _json_text(), _json_text())
        fields["messages"] = draw(st.lists(message | _json_text(), max_size=3).map(
            lambda items: "[" + ",".join(items) + "]") | _json_text())
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5)):
        fields[name] = draw(_json_text())
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}").encode()


def parse(raw: bytes, kind: str) -> ParsedRequest:
    """The front adapter of ``kind`` parses ``raw``."""
    return (ChatCompletions() if kind == CHAT else Completions()).parse(raw)


def check(raw: bytes, kind: str) -> None:
    try:
        parsed = parse(raw, kind)
    except GatewayError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.message)
        body = exc.body()["error"]
        assert isinstance(body["message"], str) and body["message"]
        orjson.dumps(exc.body())
        return
    assert isinstance(parsed, ParsedRequest)
    assert isinstance(parsed.model, str) and parsed.model
    assert isinstance(parsed.stream, bool) and isinstance(parsed.include_usage, bool)
    orjson.dumps(parsed.body)  # the gateway re-encodes bodies (added fields, routing's canonical prompt)


KINDS = st.sampled_from([CHAT, COMPLETIONS])


@seed(SEED)
@SETTINGS
@given(bodies(), KINDS)
def test_objects_with_hostile_fields(raw: bytes, kind: str) -> None:
    check(raw, kind)


@seed(SEED)
@SETTINGS
@given(_json_text(), KINDS)
def test_any_json_value(text: str, kind: str) -> None:
    check(text.encode(), kind)


@seed(SEED)
@SETTINGS
@given(st.binary(max_size=200) | bodies().map(lambda b: b[: len(b) // 2]), KINDS)
def test_bytes_that_are_not_json(raw: bytes, kind: str) -> None:
    check(raw, kind)


def _valid(kind: str, **extra: Any) -> bytes:
    base: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}]} if kind == CHAT else {
        "model": "m", "prompt": "x"}
    return orjson.dumps({**base, **extra})


@seed(SEED)
@SETTINGS
@given(st.sampled_from(FIELDS), _json_text(), KINDS)
def test_one_hostile_field_in_a_valid_request(name: str, value: str, kind: str) -> None:
    raw = _valid(kind)
    check(raw[:-1] + b"," + json.dumps(name).encode() + b":" + value.encode() + b"}", kind)
