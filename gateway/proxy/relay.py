"""Relaying one upstream answer to the client: a whole body, or a stream passed on chunk by chunk.

Both settle (the stages' post-request round trip, which hands the usage record on) just before the
last message goes out, so a client holding a complete answer means the record is stored, and its
cost (``Exchange.billed_ticks``) can go into that last message. The request's ``ReplyShape`` (its
front adapter's protocol) shapes the answer: Chat Completions pass through as the bytes that came;
other protocols are translated event by event. A stream cut by the worker ends with the protocol's
error event so the client's SDK raises instead of taking a truncated answer as whole; a worker's own
4xx leaves as a gateway error, in the client protocol's shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson

from gateway import errors
from gateway.asgi import Send
from gateway.pipeline.contract import Retryable, UpstreamReply
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.shaping import StreamShaper, with_cost
from gateway.proxy.sse_tap import SseTap
from gateway.upstream.openai_worker import CONNECT_ERRORS

log = logging.getLogger("gateway.proxy")

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]
_DONE = b"data: [DONE]"
Settle = Callable[[], Awaitable[None]]


class Relay:
    def __init__(self, max_response_bytes: int, ttft_timeout_s: float) -> None:
        self._max_bytes = max_response_bytes
        self._ttft = ttft_timeout_s

    async def whole(self, ex: Exchange, reply: UpstreamReply, send: Send, extra: list[tuple[bytes, bytes]],
                    settle: Settle) -> None:
        body = await reply.body(self._max_bytes)
        ex.first_byte_at = time.perf_counter()
        if reply.status != 200:
            # The worker refused the request itself (an unsupported parameter...): its error, in the
            # client protocol's shape, with its status.
            ex.finished_at = time.perf_counter()
            raise worker_error(reply.status, body)
        parsed = _json_object(body)
        if parsed is None:
            log.warning("worker %s sent a 200 whose body is not a JSON object", _worker(ex))
            raise errors.upstream_failed("the worker sent an invalid response")
        usage = parsed.get("usage")
        ex.usage = usage if isinstance(usage, dict) else None
        model = parsed.get("model")
        ex.served_model = model[:200] if isinstance(model, str) and model else None
        ex.finished_at = time.perf_counter()
        await asyncio.shield(settle())  # a client leaving now must not lose it
        body = ex.request.shape.whole(parsed, body, ex.billed_ticks)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *extra]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        ex.responded = True
        ex.bytes_sent = len(body)

    async def stream(self, ex: Exchange, reply: UpstreamReply, send: Send, extra: list[tuple[bytes, bytes]],
                     settle: Settle) -> bool:
        """Relay the stream; returns whether it ended whole. Nothing goes to the client before the first
        chunk came: a worker that sends none within the TTFT timeout is ``Retryable``."""
        chunks = reply.chunks()
        first = await self._first_chunk(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *extra]})
        tap = SseTap()
        shaper = ex.request.shape.stream()
        tail = b""
        cut: str | None = None
        try:
            chunk: bytes | None = first
            while chunk is not None:
                if ex.first_byte_at is None:
                    ex.first_byte_at = time.perf_counter()
                out = tap.feed(chunk)
                tail = (tail + chunk)[-64:]
                if out and not shaper.passthrough:
                    out = _translate(shaper, tap, out)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    ex.bytes_sent += len(out)
                chunk = await anext(chunks, None)
        except CONNECT_ERRORS as exc:
            cut = exc.__class__.__name__
        finally:
            ex.usage = tap.usage
            ex.content_events = tap.content_events
            ex.reasoning_events = tap.reasoning_events
            ex.served_model = tap.model
        if cut is None and _DONE not in tail:
            cut = "stream ended without [DONE]"
        ex.finished_at = time.perf_counter()
        if cut is not None:
            ex.outcome = "upstream_cut"
            log.warning("stream %s from worker %s cut: %s", ex.request_id, _worker(ex), cut)
            await asyncio.shield(settle())
            last = shaper.fail(errors.upstream_failed(f"the stream was interrupted ({cut})"))
            await send({"type": "http.response.body", "body": last, "more_body": False})
            ex.responded = True
            return False
        await asyncio.shield(settle())  # a client leaving now must not lose it
        if shaper.passthrough:
            last = tap.rest()
            if tap.usage_event is not None and ex.request.include_usage:
                event = {**tap.usage_event, "usage": with_cost(tap.usage_event.get("usage"), ex.billed_ticks)}
                last = b"data: " + orjson.dumps(event) + b"\n\n" + last
        else:
            last = shaper.chunk(tap.usage_event) if tap.usage_event is not None else b""
            last += shaper.finish(ex.billed_ticks)
        await send({"type": "http.response.body", "body": last, "more_body": False})
        ex.bytes_sent += len(last)
        ex.responded = True
        return True

    async def _first_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        try:
            async with asyncio.timeout(self._ttft):  # no task per request, unlike wait_for
                return await anext(chunks, None)
        except TimeoutError:
            raise Retryable(f"no first byte within {self._ttft:g} s") from None
        except CONNECT_ERRORS as exc:
            raise Retryable(f"stream failed before its first byte ({exc.__class__.__name__})") from None


def _translate(shaper: StreamShaper, tap: SseTap, complete: bytes) -> bytes:
    """Each complete ``data:`` event of the worker's stream, through the front adapter's translation."""
    out = b""
    for payload in tap.events(complete):
        if payload == b"[DONE]":
            continue
        parsed = _json_object(payload)
        if parsed is not None:
            out += shaper.chunk(parsed)
    return out


def worker_error(status: int, body: bytes) -> errors.GatewayError:
    """A worker's own 4xx as a gateway error (OpenAI's ``{"error": {...}}``, vLLM's ``{"object": "error", ...}``
    and FastAPI's ``{"detail": ...}`` are understood), so that it leaves in the client protocol's shape."""
    parsed = _json_object(body)
    inner = parsed.get("error") if parsed is not None else None
    fields: dict[str, object] = inner if isinstance(inner, dict) else (parsed or {})
    message = fields.get("message") or fields.get("detail") or (inner if isinstance(inner, str) else None)
    if not isinstance(message, str) or not message:
        message = body[:300].decode(errors="replace") or f"The worker answered {status}."
    param, code = fields.get("param"), fields.get("code")
    return errors.GatewayError(status if 400 <= status < 500 else 502, message[:2000], "invalid_request_error",
                               code=code if isinstance(code, str) else None,
                               param=param if isinstance(param, str) else None)


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _worker(ex: Exchange) -> str:
    return ex.worker.id if ex.worker is not None else "-"
