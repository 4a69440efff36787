"""The SSE tap passes on whole events only, as the bytes that came, and holds the usage-only event
(and what follows it) for the relay to send after settling."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy.sse_tap import SseTap

CONTENT = b'data: {"model":"m","choices":[{"delta":{"content":"hi"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_an_event_split_across_chunks_goes_out_once_whole() -> None:
    tap = SseTap()
    assert tap.feed(CONTENT[:10]) == b""
    assert tap.feed(CONTENT[10:] + CONTENT[:5]) == CONTENT
    assert tap.feed(CONTENT[5:]) == CONTENT
    assert tap.content_events == 2 and tap.model == "m"


def test_the_usage_event_and_what_follows_are_held() -> None:
    tap = SseTap()
    assert tap.feed(CONTENT + USAGE[:20]) == CONTENT
    assert tap.feed(USAGE[20:] + DONE[:4]) == b""
    assert tap.feed(DONE[4:]) == b""
    assert tap.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    assert tap.usage_event is not None and tap.usage_event["choices"] == []
    assert tap.rest() == DONE


def test_usage_inside_a_content_chunk_is_relayed() -> None:
    tap = SseTap()
    mixed = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}\n\n'
    assert tap.feed(mixed + DONE) == mixed + DONE
    assert tap.usage == {"prompt_tokens": 1} and tap.usage_event is None


def test_translation_sees_each_data_payload() -> None:
    tap = SseTap()
    assert tap.events(CONTENT + b": keep-alive\n\n" + DONE) == [CONTENT[6:-2], b"[DONE]"]


@given(st.lists(st.sampled_from([CONTENT, b": ping\n\n", b'data: {"choices":[{"delta":{}}],"usage":{"a":1}}\n\n']),
                max_size=12),
       st.booleans(), st.lists(st.integers(min_value=1, max_value=200), max_size=30))
def test_any_split_gives_the_same_bytes_with_the_usage_event_held(before: list[bytes], with_usage: bool,
                                                                  cuts: list[int]) -> None:
    stream = b"".join(before) + (USAGE + DONE if with_usage else DONE)
    tap, out, pos = SseTap(), b"", 0
    for cut in [*cuts, len(stream)]:
        out += tap.feed(stream[pos:pos + cut])
        pos += cut
    out += tap.feed(stream[pos:])
    if with_usage:
        assert out == b"".join(before) and tap.rest() == DONE
        assert tap.usage_event is not None and tap.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    else:
        assert out + tap.rest() == stream and tap.usage_event is None
