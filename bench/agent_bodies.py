"""Chat bodies for throughput benchmarks: a 1 KB question, and the turns of a growing coding-agent
conversation (one shared system prompt and tool list, then assistant tool calls and tool results).

``bodies(size)`` gives a few successive turns of one conversation whose JSON is at most ``size`` bytes
and at least 3/4 of it, so a load generator cycling through them sends a conversation that grows,
with every turn's prefix shared with the previous one (what prefix routing sees from an agent).
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from bench.workloads import words

MODEL = "grok-code-fast-1"
SMALL = {"model": MODEL, "max_tokens": 16,
         "messages": [{"role": "system", "content": "You are a careful coding assistant. " * 20},
                      {"role": "user", "content": "Write a function that reverses a linked list in Python."}]}


def _tools(rng: random.Random) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {
        "name": name, "description": words(rng, 40),
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string", "description": words(rng, 10)},
            "content": {"type": "string", "description": words(rng, 10)}}, "required": ["path"]}}}
        for name in ("read_file", "write_file", "run_tests", "grep", "list_dir", "apply_patch")]


def conversation_turns(max_bytes: int, seed: int = 3) -> list[dict[str, Any]]:
    """Successive request bodies of one agent conversation, each a turn longer, up to ``max_bytes``."""
    rng = random.Random(seed)
    base: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "tools": _tools(rng)}
    messages: list[dict[str, Any]] = [{"role": "system", "content": words(rng, 900)},
                                      {"role": "user", "content": words(rng, 60)}]
    turns: list[dict[str, Any]] = []
    turn = 0
    while True:
        body = {**base, "messages": list(messages)}
        if len(orjson.dumps(body)) > max_bytes:
            return turns
        turns.append(body)
        messages.append({"role": "assistant", "content": words(rng, 20), "tool_calls": [
            {"id": f"call_{turn}", "type": "function",
             "function": {"name": "read_file", "arguments": orjson.dumps({"path": f"src/m{turn}.py"}).decode()}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{turn}", "content": words(rng, rng.randint(150, 700))})
        turn += 1


def bodies(size: int, stream: bool, most: int = 8) -> list[bytes]:
    """Request bodies of about ``size`` bytes (1 KB: the same question; larger: conversation turns)."""
    if size <= 2048:
        return [orjson.dumps({**SMALL, "stream": stream})]
    turns = [t for t in conversation_turns(size) if len(orjson.dumps(t)) >= size * 3 // 4][-most:]
    return [orjson.dumps({**t, "stream": stream}) for t in turns]
