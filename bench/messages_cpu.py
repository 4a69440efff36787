"""The gateway CPU the Messages translation adds over the same request sent as Chat Completions.

    python -m bench.messages_cpu [--bytes 1024] [--tokens 100] [--rounds 20000]

Side by side in one process, per request, in microseconds: the front adapter's parse (Chat: check the
body; Messages: check and translate it, encode the chat payload) plus the answer's shaping (Chat: add
the cost to the usage and re-encode; Messages: build the Message object). For streams, the per-request
cost of ``--tokens`` content chunks: Chat relays the worker's bytes (nothing per chunk here); Messages
parses each event and writes its Anthropic events, plus the opening and closing events. The parse of the
worker's whole answer and the SSE tap are the same for both and not counted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.front.chat import ChatCompletions
from gateway.front.messages import Messages
from gateway.pipeline.shaping import OPENAI_SHAPE

MODEL = "grok-code-fast-1"


def bodies(size: int) -> tuple[bytes, bytes]:
    """A Messages body of about ``size`` bytes and the same request as Chat Completions."""
    text = ("Refactor the parser so that it reports the line of each error. " * (size // 60 + 1))[: max(size - 200, 10)]
    half = len(text) // 2
    messages = {"model": MODEL, "max_tokens": 256, "system": text[:half],
                "messages": [{"role": "user", "content": [{"type": "text", "text": text[half:]}]}]}
    chat = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "system", "content": text[:half]},
                                                            {"role": "user", "content": text[half:]}]}
    return orjson.dumps(messages), orjson.dumps(chat)


ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": MODEL,
          "choices": [{"index": 0, "finish_reason": "length",
                       "message": {"role": "assistant", "content": "word " * 100}}],
          "usage": {"prompt_tokens": 260, "completion_tokens": 100, "total_tokens": 360,
                    "prompt_tokens_details": {"cached_tokens": 128}}}


def per_call_us(fn: Callable[[], Any], rounds: int) -> float:
    for _ in range(min(rounds, 1000)):
        fn()
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(rounds):
            fn()
        best = min(best, (time.process_time() - start) / rounds)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bytes", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    raw_messages, raw_chat = bodies(args.bytes)
    chat_adapter, messages_adapter = ChatCompletions(), Messages()
    raw_answer = orjson.dumps(ANSWER)

    def chat_whole() -> None:
        chat_adapter.parse(raw_chat)
        OPENAI_SHAPE.whole(orjson.loads(raw_answer), raw_answer, 12345)

    def messages_whole() -> None:
        request = messages_adapter.parse(raw_messages)
        request.shape.whole(orjson.loads(raw_answer), raw_answer, 12345)

    events = [orjson.dumps({"id": "c", "object": "chat.completion.chunk", "model": MODEL,
                            "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}]})
              for _ in range(args.tokens)]
    usage = orjson.loads(orjson.dumps({"id": "c", "choices": [], "usage": ANSWER["usage"]}))
    request = messages_adapter.parse(raw_messages)

    def messages_stream() -> None:
        shaper = request.shape.stream()
        for payload in events:
            shaper.chunk(orjson.loads(payload))
        shaper.chunk(usage)
        shaper.finish(12345)

    chat_us = per_call_us(chat_whole, args.rounds)
    messages_us = per_call_us(messages_whole, args.rounds)
    stream_us = per_call_us(messages_stream, max(args.rounds // args.tokens, 50))
    print(f"body {len(raw_messages)} B (messages) / {len(raw_chat)} B (chat); answer {len(raw_answer)} B")
    print(f"non-stream, parse + shape: chat {chat_us:.1f} us, messages {messages_us:.1f} us, "
          f"extra {messages_us - chat_us:.1f} us per request")
    print(f"stream of {args.tokens} chunks, Anthropic events: {stream_us:.1f} us per request "
          f"({stream_us / args.tokens:.2f} us per chunk; chat relays the bytes)")


if __name__ == "__main__":
    main()
