"""A tap on a relayed SSE stream: find the usage chunk without re-encoding anything else.

Chunks pass through as the bytes that arrived, except the usage-only chunk when the gateway asked
the worker for usage the client did not ask for: that event is dropped from the client's stream.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_USAGE = b'"usage":{'
_USAGE_SPACED = b'"usage": {'
_MODEL = b'"model":"'
# Generated pieces: a field with a non-empty string value counts as one (about one token per event);
# one pass in C over the completed events.
_PIECE = re.compile(rb'"(content|text|arguments|reasoning_content|reasoning)": ?"(?!")')


class SseTap:
    __slots__ = ("_drop_usage_event", "_pending", "content_events", "model", "reasoning_events", "usage")

    def __init__(self, drop_usage_event: bool) -> None:
        self._drop_usage_event = drop_usage_event
        self._pending = b""
        self.usage: dict[str, Any] | None = None
        self.content_events = 0  # non-empty content, reasoning or tool-argument pieces: ~ one per token
        self.reasoning_events = 0  # of which reasoning
        self.model: str | None = None  # the model the worker says served the request

    def feed(self, chunk: bytes) -> bytes:
        """Return what to send to the client for this chunk (usually the chunk itself)."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n\n")
        if end < 0:  # no complete event yet: relay now, inspect when complete
            self._pending = data if len(data) < 1 << 20 else b""
            return chunk
        complete, self._pending = data[: end + 2], data[end + 2 :]
        found = _PIECE.findall(complete)
        if found:
            self.content_events += len(found)
            self.reasoning_events += sum(1 for name in found if name[0] == 114)  # b"r": reasoning*
        if self.model is None:
            start = complete.find(_MODEL)
            if start >= 0:
                end = complete.find(b'"', start + len(_MODEL))
                self.model = complete[start + len(_MODEL):end].decode(errors="replace")[:200] or None
        if _USAGE not in complete and _USAGE_SPACED not in complete:
            return chunk
        kept: list[bytes] = []
        dropped = False
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            if (_USAGE in event or _USAGE_SPACED in event) and event.startswith(b"data: {"):
                usage, only_usage = self._usage_of(event[6:])
                if usage is not None:
                    self.usage = usage
                    if only_usage and self._drop_usage_event:
                        dropped = True
                        continue
            kept.append(event + b"\n\n")
        if not dropped:
            return chunk
        # The dropped event may have started in an earlier chunk that was already relayed; only
        # whole events inside this chunk's completed part are rewritten.
        prefix_len = len(data) - len(chunk)
        if prefix_len > 0:
            return chunk  # event spanned chunks: relay as is (rare; usage still recorded)
        return b"".join(kept) + self._pending

    @staticmethod
    def _usage_of(payload: bytes) -> tuple[dict[str, Any] | None, bool]:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None, False
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if not isinstance(usage, dict):
            return None, False
        return usage, not obj.get("choices")
