"""Relaying one upstream answer to the client: a whole body, or a stream passed on chunk by chunk.

Both settle (the stages' post-request round trip, which hands the usage record on) just before the
last message goes out, so a client holding a complete answer means the record is stored. A stream
cut by the worker ends with an OpenAI-shaped error event so the client's SDK raises instead of taking
a truncated answer as whole.
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
        ctype = reply.content_type.encode()
        if reply.status == 200:
            parsed = _json_object(body)
            if parsed is None:
                log.warning("worker %s sent a 200 whose body is not a JSON object", _worker(ex))
                raise errors.upstream_failed("the worker sent an invalid response")
            usage = parsed.get("usage")
            ex.usage = usage if isinstance(usage, dict) else None
            model = parsed.get("model")
            ex.served_model = model[:200] if isinstance(model, str) and model else None
            ctype = b"application/json"
        ex.finished_at = time.perf_counter()
        await asyncio.shield(settle())  # a client leaving now must not lose it
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *extra]})
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
        tap = SseTap(drop_usage_event=not ex.request.include_usage)
        tail = b""
        cut: str | None = None
        try:
            chunk: bytes | None = first
            while chunk is not None:
                if ex.first_byte_at is None:
                    ex.first_byte_at = time.perf_counter()
                out = tap.feed(chunk)
                tail = (tail + chunk)[-64:]
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
            event = errors.upstream_failed(f"the stream was interrupted ({cut})").body_bytes()
            await asyncio.shield(settle())
            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": False})
            ex.responded = True
            return False
        await asyncio.shield(settle())  # a client leaving now must not lose it
        await send({"type": "http.response.body", "body": b"", "more_body": False})
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


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _worker(ex: Exchange) -> str:
    return ex.worker.id if ex.worker is not None else "-"
