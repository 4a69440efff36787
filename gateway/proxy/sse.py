"""A tap on a relayed SSE stream: find the usage chunk without re-encoding anything else.

Chunks pass through as the bytes that arrived, except the usage-only chunk when the gateway asked
the worker for usage the client did not ask for: that event is dropped from the client's stream.
"""

from __future__ import annotations

from typing import Any

import orjson

_USAGE = b'"usage":{'
_USAGE_SPACED = b'"usage": {'


class SseTap:
    __slots__ = ("_drop_usage_event", "_pending", "content_events", "usage")

    def __init__(self, drop_usage_event: bool) -> None:
        self._drop_usage_event = drop_usage_event
        self._pending = b""
        self.usage: dict[str, Any] | None = None
        self.content_events = 0  # events carrying choices: about one per generated token

    def feed(self, chunk: bytes) -> bytes:
        """Return what to send to the client for this chunk (usually the chunk itself)."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n\n")
        if end < 0:  # no complete event yet: relay now, inspect when complete
            self._pending = data if len(data) < 1 << 20 else b""
            return chunk
        complete, self._pending = data[: end + 2], data[end + 2 :]
        self.content_events += complete.count(b'"delta"') + complete.count(b'"text"')
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
