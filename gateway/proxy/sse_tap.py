"""A tap on a relayed SSE stream: complete events out, the usage found without re-encoding the rest.

The tap passes on whole events only (an event split across two network chunks goes out once its end
has arrived), as the bytes that arrived. The usage-only event at the end of a chat stream, and
whatever follows it (``[DONE]``), is held back: the relay settles the request first, then sends that
event again with the request's cost added (or drops it, when the client did not ask for usage).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_USAGE = b'"usage":{'
_USAGE_SPACED = b'"usage": {'
_MODEL = b'"model":"'
_SEP = b"\n\n"
_MAX_PENDING = 1 << 20  # an "event" this long without its end is relayed as it is
# Generated pieces: a field with a non-empty string value counts as one (about one token per event);
# one pass in C over the completed events.
_PIECE = re.compile(rb'"(content|text|arguments|reasoning_content|reasoning)": ?"(?!")')


class SseTap:
    __slots__ = ("_held", "_pending", "content_events", "model", "reasoning_events", "usage", "usage_event")

    def __init__(self) -> None:
        self._pending = b""
        self._held: list[bytes] = []  # the usage-only event's successors ([DONE]), sent after settling
        self.usage: dict[str, Any] | None = None
        self.usage_event: dict[str, Any] | None = None  # the usage-only chunk, parsed (held back)
        self.content_events = 0  # non-empty content, reasoning or tool-argument pieces: ~ one per token
        self.reasoning_events = 0  # of which reasoning
        self.model: str | None = None  # the model the worker says served the request

    def feed(self, chunk: bytes) -> bytes:
        """The complete events this chunk ends, to relay now (often the chunk itself)."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(_SEP)
        if end < 0:
            if len(data) > _MAX_PENDING:  # not SSE as we know it: pass it on rather than hold it
                self._pending = b""
                return data
            self._pending = data
            return b""
        end += 2
        complete = data if end == len(data) else data[:end]
        self._pending = b"" if end == len(data) else data[end:]
        found = _PIECE.findall(complete)
        if found:
            self.content_events += len(found)
            self.reasoning_events += sum(1 for name in found if name[0] == 114)  # b"r": reasoning*
        if self.model is None:
            start = complete.find(_MODEL)
            if start >= 0:
                stop = complete.find(b'"', start + len(_MODEL))
                self.model = complete[start + len(_MODEL):stop].decode(errors="replace")[:200] or None
        if self._held:  # everything after the usage event waits with it
            self._held.append(complete)
            return b""
        if _USAGE not in complete and _USAGE_SPACED not in complete:
            return complete
        return self._split_usage(complete)

    def _split_usage(self, complete: bytes) -> bytes:
        """``complete`` up to the usage-only event, which is held with everything after it. Only the events
        that mention usage are looked at; the bytes around them are sliced, not split into events."""
        kept: list[bytes] = []
        pos, size = 0, len(complete)
        while pos < size:
            hit = _find_usage(complete, pos)
            if hit < 0:
                break
            start = complete.rfind(_SEP, pos, hit)
            start = pos if start < 0 else start + 2
            stop = complete.find(_SEP, hit)
            stop = size if stop < 0 else stop + 2
            event = complete[start:stop]
            if event.startswith(b"data: {"):
                parsed = _object(event[6:])
                usage = parsed.get("usage") if parsed is not None else None
                if isinstance(usage, dict):
                    self.usage = usage
                    if not parsed.get("choices"):  # type: ignore[union-attr]
                        self.usage_event = parsed
                        self._held.append(b"")
                        if stop < size:
                            self._held.append(complete[stop:])
                        kept.append(complete[pos:start])
                        return b"".join(kept)
            kept.append(complete[pos:stop])
            pos = stop
        kept.append(complete[pos:])
        return b"".join(kept)

    def events(self, complete: bytes) -> list[bytes]:
        """``complete`` (what ``feed`` returned) as the payloads of its ``data:`` events."""
        return [event[6:] if event.startswith(b"data: ") else event[5:]
                for event in complete.split(_SEP) if event.startswith(b"data:")]

    def rest(self) -> bytes:
        """What was held after the usage event, and an unfinished last event."""
        return b"".join(self._held) + self._pending


def _find_usage(data: bytes, pos: int) -> int:
    hits = [i for i in (data.find(_USAGE, pos), data.find(_USAGE_SPACED, pos)) if i >= 0]
    return min(hits) if hits else -1


def _object(payload: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
