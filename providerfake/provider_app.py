"""The fake provider as a pure ASGI app: ``POST /v1/chat/completions`` (whole or streamed) and
``GET /v1/models``.

The answer is deterministic: ``max_tokens`` (else ``default_tokens``) output tokens, one word each, one
stream chunk per token; the prompt counts one token per four characters of message text plus four per
message. What it reported is kept in ``reported`` (one usage object per answered request), so a test
can compare it with the gateway's ledger.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

Scope = dict[str, Any]

# The fake provider's own price, ticks (1e-10 USD) per token (above the gateway's reference book, so a
# margin shows): what cost_in_usd_ticks is computed with.
XAI_TICKS = {"input": 3_000, "cached": 300, "output": 20_000}


@dataclass
class Fault:
    """What the next requests get. ``status``: answer that HTTP status with an OpenAI-shaped error (and
    ``retry_after`` as the Retry-After header when set); ``delay_s``: wait before the response headers;
    ``cut_after``: a stream stops after this many content chunks, without usage or ``[DONE]``, the
    connection dropped."""

    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    cut_after: int | None = None


@dataclass
class ProviderFake:
    shape: str = "openai"  # "openai" or "xai"
    default_tokens: int = 8
    reasoning_tokens: int = 5  # xai shape only
    fault: Fault = field(default_factory=Fault)
    requests: int = 0
    reported: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] == "GET" and path.endswith("/models"):
            await _json(send, 200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
            return
        if scope["method"] != "POST" or not path.endswith("/chat/completions"):
            await _json(send, 404, _error("not found", "invalid_request_error"))
            return
        self.requests += 1
        self.headers.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        try:
            body = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            await _json(send, 400, _error("invalid JSON", "invalid_request_error"))
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await _json(send, 400, _error("messages is required", "invalid_request_error"))
            return
        self.bodies.append(body)
        fault = self.fault
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status is not None:
            extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
            kind = {401: "authentication_error", 429: "rate_limit_exceeded"}.get(fault.status, "server_error")
            await _json(send, fault.status, _error(f"fake provider answers {fault.status}", kind), extra)
            return
        if body.get("stream"):
            await self._stream(send, body)
        else:
            await _json(send, 200, self._whole(body))

    # --- answers --------------------------------------------------------------------------
    def _usage(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = _prompt_tokens(body)
        output = _output_tokens(body, self.default_tokens)
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": output,
                                 "total_tokens": prompt + output,
                                 "prompt_tokens_details": {"cached_tokens": 0}}
        if self.shape == "xai":
            reasoning = self.reasoning_tokens
            usage["total_tokens"] = prompt + output + reasoning  # xAI: reasoning outside completion
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
            usage["num_sources_used"] = 0
            usage["cost_in_usd_ticks"] = (prompt * XAI_TICKS["input"] + (output + reasoning) * XAI_TICKS["output"])
        self.reported.append(usage)
        return usage

    def _whole(self, body: dict[str, Any]) -> dict[str, Any]:
        n = _output_tokens(body, self.default_tokens)
        return {"id": f"chatcmpl-fake-{next(self._ids)}", "object": "chat.completion", "created": int(time.time()),
                "model": str(body.get("model", "fake-model")),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": _text(n)},
                             "finish_reason": "length" if body.get("max_tokens") else "stop"}],
                "usage": self._usage(body)}

    async def _stream(self, send: Any, body: dict[str, Any]) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        ident = f"chatcmpl-fake-{next(self._ids)}"
        model = str(body.get("model", "fake-model"))
        base = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        n = _output_tokens(body, self.default_tokens)
        cut = self.fault.cut_after

        async def event(obj: dict[str, Any]) -> None:
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(obj) + b"\n\n",
                        "more_body": True})

        await event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": None}]})
        for i in range(n):
            if cut is not None and i >= cut:
                await asyncio.sleep(0.01)
                raise ConnectionResetError("fake provider cut the stream")  # uvicorn drops the connection
            await event({**base, "choices": [{"index": 0, "delta": {"content": ("" if i == 0 else " ") + f"w{i}"},
                                              "finish_reason": None}]})
        await event({**base, "choices": [{"index": 0, "delta": {},
                                          "finish_reason": "length" if body.get("max_tokens") else "stop"}]})
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            await event({**base, "choices": [], "usage": self._usage(body)})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _prompt_tokens(body: dict[str, Any]) -> int:
    chars, n = 0, 0
    for message in body.get("messages", []):
        n += 1
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return 4 * n + (chars + 3) // 4


def _output_tokens(body: dict[str, Any], default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return min(value, 4096)
    return default


def _text(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


async def _json(send: Any, status: int, obj: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(obj)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
