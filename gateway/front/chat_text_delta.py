"""The text of a plain chat text-delta event, read from its bytes without parsing the whole chunk.

Nearly every event of a chat stream is one choice whose delta is nothing but ``content``::

    {"id":"...","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,
     "delta":{"content":"text"},"logprobs":null,"finish_reason":null}],"usage":null}

A stream translation (Messages, Responses) needs only that text, and parsing the chunk into its four dicts
costs more than translating it. ``plain_text(payload)`` finds the text by bytes and returns it decoded, but
only when the event can hold nothing else a translation reads: the delta is ``{"content": <string>}``
alone, and outside that string there is no other object or array (no usage, error, tool calls, reasoning,
logprobs or second choice), no ``error`` field and no finish reason but ``null``. For anything else, and
for any doubt, it returns None and the caller parses the event as before. The string itself is decoded by
orjson, so escapes, unicode and invalid input are handled exactly as a full parse handles them.
"""

from __future__ import annotations

import orjson

_KEY = b'"choices":[{"index":0,"delta":{"content":"'
_FINISH = b'"finish_reason":'
_FINISH_NULL = b'"finish_reason":null'
_ERROR = b'"error"'
_BACKSLASH = 92


def plain_text(payload: bytes) -> str | None:
    """The delta's text of a plain text-delta chunk (``payload``: one SSE ``data:`` payload), else None."""
    start = payload.find(_KEY)
    if start < 0 or payload.count(b"{", 0, start) != 1 or payload.find(b"[", 0, start) >= 0:
        return None
    if payload.find(_ERROR, 0, start) >= 0:
        return None
    opening = start + len(_KEY) - 1  # the string's opening quote
    end = payload.find(b'"', opening + 1)
    while end > 0 and payload[end - 1] == _BACKSLASH:  # an escaped quote if an odd number of backslashes
        slashes = 1
        while payload[end - 1 - slashes] == _BACKSLASH:
            slashes += 1
        if slashes % 2 == 0:
            break
        end = payload.find(b'"', end + 1)
    if end < 0 or payload[end + 1:end + 2] != b"}":  # the delta holds the content only
        return None
    if payload.find(b"{", end) >= 0 or payload.find(b"[", end) >= 0 or payload.find(_ERROR, end) >= 0:
        return None
    finishes = payload.count(_FINISH, end)
    if finishes > 1 or (finishes == 1 and payload.find(_FINISH_NULL, end) < 0):
        return None
    try:
        text = orjson.loads(payload[opening:end + 1])
    except orjson.JSONDecodeError:
        return None
    return text if isinstance(text, str) else None
