"""CPU of the parse-time nesting check (gateway/front/json_depth.py) next to orjson's parse of the same body.

    python -m bench.nesting [--tokens 32000]

The body is bench.route_cpu's agent conversation (system prompt, tools, tool calls and results).
"""

from __future__ import annotations

import argparse
import timeit

import orjson

from bench.route_cpu import conversation
from gateway.front import json_depth as nesting
from gateway.front.chat import ChatCompletions


def per_call_us(fn: object, number: int = 500) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32_000)
    args = ap.parse_args()
    raw = conversation(args.tokens)
    body = orjson.loads(raw)
    print(f"body {len(raw) / 1024:.0f} KB, {len(body['messages'])} messages")
    print(f"nesting.exceeds  {per_call_us(lambda: nesting.exceeds(body)):8.1f} us (the walk)")
    print(f"exceeds_encoded  {per_call_us(lambda: nesting.exceeds_encoded(body)):8.1f} us (orjson's encoder)")
    print(f"orjson.loads     {per_call_us(lambda: orjson.loads(raw)):8.1f} us")
    print(f"parse (all)      {per_call_us(lambda: ChatCompletions().parse(raw)):8.1f} us")


if __name__ == "__main__":
    main()
