"""How a front adapter presents the worker's answer in its own protocol: the response-shaping seam.

Workers speak OpenAI Chat Completions (or Completions). A front adapter that speaks another protocol
(the Responses API, Anthropic Messages) translates the request into a chat body and hands the relay a
``ReplyShape`` that turns the worker's answer back into its protocol: a whole body, a stream of its
own events, and its own error shape. Chat Completions and Completions use a pass-through shape: the
worker's bytes go out as they came, and only the usage object gains ``cost_in_usd_ticks``.

Every method here is called by the relay; none does I/O. ``billed_ticks`` is what the request costs
the organisation at its plan (the ledger row's billed cost), known once the request is settled, which
the relay does before the last message goes out; ``None`` when nothing was generated.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from gateway.errors import GatewayError

COST_FIELD = "cost_in_usd_ticks"  # in units of 1e-10 USD, as the model maker's API reports it


class StreamShaper(Protocol):
    """One stream's translation, made fresh per request by ``ReplyShape.stream``."""

    passthrough: bool  # True: the worker's events are relayed untouched; ``chunk`` is never called

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        """One parsed ``chat.completion.chunk`` (also the usage-only one, and a worker's ``{"error": ...}``
        event) → the SSE bytes to send now (may be empty)."""
        ...

    def finish(self, billed_ticks: int | None) -> bytes:
        """The stream ended whole and is settled: the closing events (usage, cost, the end marker)."""
        ...

    def fail(self, exc: GatewayError) -> bytes:
        """The worker cut the stream (after it was settled): the protocol's error event."""
        ...


class ReplyShape(Protocol):
    """One client protocol's answer shape; ``ParsedRequest.shape``."""

    def whole(self, answer: dict[str, Any], raw: bytes, billed_ticks: int | None) -> bytes:
        """The 200 answer of a non-streaming request (``answer`` is ``raw`` parsed) → the body to send."""
        ...

    def stream(self) -> StreamShaper:
        ...

    def error_body(self, exc: GatewayError) -> bytes:
        """Any error of this route (auth, limits, a worker's own 4xx) in the protocol's shape."""
        ...


def with_cost(usage: Any, billed_ticks: int | None) -> Any:
    """``usage`` with ``cost_in_usd_ticks`` added (a new dict), or as it was when there is no cost."""
    if billed_ticks is None or not isinstance(usage, dict):
        return usage
    return {**usage, COST_FIELD: billed_ticks}


class _PassthroughStream:
    __slots__ = ()
    passthrough = True

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        raise AssertionError("a pass-through stream is relayed as it came")

    def finish(self, billed_ticks: int | None) -> bytes:
        return b""  # the relay re-emits the held usage event (with the cost) and [DONE]

    def fail(self, exc: GatewayError) -> bytes:
        return b"data: " + exc.body_bytes() + b"\n\n"


class OpenAIShape:
    """Chat Completions and Completions: the worker's answer as it came, the cost added to its usage."""

    __slots__ = ()
    _stream = _PassthroughStream()

    def whole(self, answer: dict[str, Any], raw: bytes, billed_ticks: int | None) -> bytes:
        usage = answer.get("usage")
        if billed_ticks is None or not isinstance(usage, dict):
            return raw
        answer["usage"] = with_cost(usage, billed_ticks)
        return orjson.dumps(answer)

    def stream(self) -> StreamShaper:
        return self._stream

    def error_body(self, exc: GatewayError) -> bytes:
        return exc.body_bytes()


OPENAI_SHAPE = OpenAIShape()
