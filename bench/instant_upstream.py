"""An instant OpenAI-compatible upstream for throughput benchmarks: canned answers, no model, no delays.

    python -m bench.instant_upstream --port 8001

A bare asyncio protocol (no framework) so that the upstream is never what limits a benchmark: it
answers ``POST /v1/chat/completions`` (and ``/v1/completions``) with one canned JSON answer, or,
when the body asks for ``"stream": true``, a canned stream of a few chunks, a usage chunk and
``[DONE]``. It reads the body only to find the stream flag (a byte search, no JSON parse), so a 128 KB
body costs it a copy and a search. It also answers what the peers probe on their workers:
``/health``, ``/v1/models``, ``/metrics``, ``/server_info``, ``/get_server_info``, ``/model_info``,
``/get_model_info``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

import orjson

MODEL = "grok-code-fast-1"
_CHUNK = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
          "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
_USAGE = {"prompt_tokens": 250, "completion_tokens": 16, "total_tokens": 266,
          "prompt_tokens_details": {"cached_tokens": 0}}


def _sse(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _stream_events(chunks: int) -> list[bytes]:
    """The stream's HTTP chunks (chunked transfer encoding, one SSE event each, as vLLM sends them)."""
    first = {**_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}
    last = {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    usage = {**_CHUNK, "choices": [], "usage": _USAGE}
    events = [_sse(first), *[_sse(_CHUNK)] * chunks, _sse(last), _sse(usage), b"data: [DONE]\n\n"]
    return [f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events] + [b"0\r\n\r\n"]


_WHOLE = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * 16}, "finish_reason": "length"}],
    "usage": _USAGE})
_MODELS = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench",
                                                      "max_model_len": 131072}]})
_INFO = orjson.dumps({"model_path": MODEL, "tokenizer_path": MODEL, "served_model_name": MODEL,
                      "is_generation": True, "max_total_num_tokens": 500000})
_METRICS = (b"vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:gpu_cache_usage_perc 0\n"
            b"vllm:kv_cache_usage_perc 0\n")
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_CL_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
_CLOSE_RE = re.compile(rb"\r\nconnection:\s*close", re.I)


def _response(status: bytes, ctype: bytes, body: bytes, close: bool = False) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype + b"\r\ncontent-length: "
            + str(len(body)).encode() + (b"\r\nconnection: close" if close else b"") + b"\r\n\r\n" + body)


class _Http(asyncio.Protocol):
    def __init__(self, stream: list[bytes]) -> None:
        self._buf = bytearray()
        self._stream = stream
        self._head: bytes | None = None
        self._need = 0
        self._body_at = 0
        self._transport: Any = None  # asyncio.Transport (uvloop's is not a subclass)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None:
            if self._head is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._head = bytes(self._buf[:end])
                m = _CL_RE.search(self._head)
                self._need = end + 4 + (int(m.group(1)) if m else 0)
                self._body_at = end + 4
            if len(self._buf) < self._need:  # the body is still arriving: nothing rescanned meanwhile
                return
            head, body = self._head, self._buf[self._body_at:self._need]
            del self._buf[:self._need]
            self._head = None
            close = _CLOSE_RE.search(head) is not None
            answer = self._answer(head, body, close)
            if isinstance(answer, list):  # a stream: one write per event, so they leave as separate segments
                for part in answer:
                    self._transport.write(part)
            else:
                self._transport.write(answer)
            if close:
                self._transport.close()
                self._transport = None

    def _answer(self, head: bytes, body: bytearray, close: bool) -> bytes | list[bytes]:
        line = head.split(b"\r\n", 1)[0]
        method, _, rest = line.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method == b"POST" and path in (b"/v1/chat/completions", b"/v1/completions"):
            if _STREAM_RE.search(body):
                head_out = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                            + (b"connection: close\r\n" if close else b"") + b"transfer-encoding: chunked\r\n\r\n")
                return [head_out + self._stream[0], *self._stream[1:]]
            return _response(b"200 OK", b"application/json", _WHOLE, close)
        if path == b"/v1/models":
            return _response(b"200 OK", b"application/json", _MODELS, close)
        if path in (b"/server_info", b"/get_server_info", b"/model_info", b"/get_model_info"):
            return _response(b"200 OK", b"application/json", _INFO, close)
        if path == b"/metrics":
            return _response(b"200 OK", b"text/plain", _METRICS, close)
        if path in (b"/health", b"/health_generate", b"/ready"):
            return _response(b"200 OK", b"text/plain", b"ok", close)
        return _response(b"404 Not Found", b"application/json", b'{"error":"not found"}', close)


async def serve(port: int, host: str = "127.0.0.1", chunks: int = 16) -> asyncio.Server:
    stream = _stream_events(chunks)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Http(stream), host, port, backlog=4096)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--chunks", type=int, default=16, help="content chunks per streamed answer")
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    async def run() -> None:
        server = await serve(args.port, args.host, args.chunks)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
