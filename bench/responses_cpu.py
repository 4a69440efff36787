"""The gateway CPU the Responses translation adds over Chat Completions, per request, at ~1 KB bodies
(target: at most 50 us), measured side by side in one process.

Per request, chat: parse the body; answer with the pass-through shape. Responses: parse, check and
translate the body to chat (and encode it), build the ``Response`` from the chat answer. Streams: one
chat chunk relayed as it came vs translated into its Responses events , and the stream's closing events. ``store`` (the
default): the record the settling round trip queues (the response, its input and output encoded), on top.

    python -m bench.responses_cpu
"""

from __future__ import annotations

import timeit
from typing import Any

import orjson

from gateway.front.chat import ChatCompletions
from gateway.front.responses import Responses, ResponsesShape, ResponsesStage
from gateway.front.responses_store import ResponseStore
from gateway.front.responses_stream import ResponsesStream
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal
from gateway.pipeline.shaping import OPENAI_SHAPE
from gateway.state.keyspace import KeySpace

TEXT = "Refactor the parser so that it reads tokens lazily and reports line numbers. "
HISTORY = [TEXT * 3, "Sure, here is the plan: " + TEXT * 2, TEXT * 3]
ANSWER: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "grok-code-fast-1",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": TEXT * 2}}],
    "usage": {"prompt_tokens": 260, "completion_tokens": 40, "total_tokens": 300,
              "prompt_tokens_details": {"cached_tokens": 200}}}
CHUNK: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "grok-code-fast-1",
                         "choices": [{"index": 0, "delta": {"content": " token"}, "finish_reason": None}]}
PRINCIPAL = Principal(key_id="key_1", org_id="org_1", org_name="bench", cache_salt="s", cache_isolation=False)


class _Queued:
    """The settling round trip, queued only: what is measured is the CPU of the record, not Redis."""

    def call(self, script: Any, keys: Any, args: Any) -> int:
        return 0


def _bodies() -> tuple[bytes, bytes]:
    roles = ["user", "assistant", "user"]
    chat = orjson.dumps({"model": "grok-code-fast-1", "max_tokens": 64, "messages": [
        {"role": "system", "content": "You are a coding agent."},
        *({"role": r, "content": t} for r, t in zip(roles, HISTORY, strict=True))]})
    responses = orjson.dumps({"model": "grok-code-fast-1", "max_output_tokens": 64,
                              "instructions": "You are a coding agent.",
                              "input": [{"role": r, "content": t} for r, t in zip(roles, HISTORY, strict=True)]})
    return chat, responses


def _us(fn: Any, n: int) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def measure(n: int = 3000) -> dict[str, float]:
    chat_raw, resp_raw = _bodies()
    chat, responses = ChatCompletions(), Responses(store=None)  # type: ignore[arg-type]  # no chain is read

    def chat_request() -> None:
        request = chat.parse(chat_raw)
        OPENAI_SHAPE.whole(dict(ANSWER), orjson.dumps(ANSWER), 12345)
        del request

    def responses_request() -> None:
        request = responses.parse(resp_raw)
        shape = request.shape
        assert isinstance(shape, ResponsesShape)
        shape.bind("req_00")  # all resolve() does without previous_response_id (no await: no loop cost here)
        shape.whole(dict(ANSWER), b"", 12345)

    store = ResponseStore(None, None, KeySpace("bench"), 86400.0, 1 << 28, 100)  # type: ignore[arg-type]
    stage, trip = ResponsesStage(store), _Queued()

    def responses_request_stored() -> None:
        request = responses.parse(resp_raw)
        shape = request.shape
        assert isinstance(shape, ResponsesShape)
        shape.bind("req_00")
        ex = Exchange(request_id="req_00", principal=PRINCIPAL, request=request, path="/v1/chat/completions",
                      payload=b"")
        ex.status, ex.answer, ex.billed_ticks = 200, dict(ANSWER), 12345
        shape.whole(ex.answer, b"", 12345)
        stage.finish(ex, trip)  # type: ignore[arg-type]

    def responses_chunk() -> None:
        stream.chunk(CHUNK)

    def responses_close() -> None:
        ResponsesStream("resp_1", {"model": "m", "input": "x"}, 0.0).close(ANSWER["usage"], 12345)

    stream = ResponsesStream("resp_1", {"model": "m", "input": "x"}, 0.0)
    stream.chunk(CHUNK)
    out = {"chat_request_us": _us(chat_request, n), "responses_request_us": _us(responses_request, n),
           "responses_request_stored_us": _us(responses_request_stored, n),
           "responses_chunk_us": _us(responses_chunk, n * 10),
           "responses_close_us": _us(responses_close, n)}
    out["extra_per_request_us"] = out["responses_request_us"] - out["chat_request_us"]
    out["extra_with_store_us"] = out["responses_request_stored_us"] - out["chat_request_us"]
    out["body_bytes"] = float(len(resp_raw))
    return out


def main() -> None:
    for name, value in measure().items():
        print(f"{name}: {value:.1f}")


if __name__ == "__main__":
    main()
