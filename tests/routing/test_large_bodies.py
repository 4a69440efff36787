"""Large bodies cost linear work, never quadratic: counted with cProfile, never timed.

A coding agent sends its whole conversation (50-400 KB) with every request. The gateway must parse
such a body once, build its canonical prefix bytes once and hash them once (at most
``routing_max_blocks`` blocks), forward the client's own bytes (not a re-encoding), and do work that
grows at most linearly with the number of messages. The counts come from cProfile over one request
(the worker here is a plain ASGI app that records what it received, so the profile's ``orjson`` and
``xxhash`` calls are the gateway's).
"""

from __future__ import annotations

import cProfile
import pstats
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.routing.prefix import blocks_in_bytes, chat_bytes
from tests.conftest import Backend, gateway_settings, serve_gateway, served

MODEL = "grok-code-fast-1"
_SALT = re.compile(rb',"cache_salt":"[^"]+"\}')
_ANSWER = orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": MODEL,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101}})
_STREAM = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in (
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
     "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": [],
     "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101}})) + b"data: [DONE]\n\n"


class RecordingWorker:
    """An OpenAI-compatible worker that keeps the exact bytes of every completions request."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        ctype, out = b"text/plain", b"ok"
        if path == "/v1/models":
            ctype, out = b"application/json", orjson.dumps({"object": "list", "data": [{"id": MODEL}]})
        elif path == "/v1/chat/completions":
            self.bodies.append(body)
            streamed = orjson.loads(body).get("stream") is True
            ctype, out = (b"text/event-stream", _STREAM) if streamed else (b"application/json", _ANSWER)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": out})


def conversation(turns: int, seed: int = 5) -> bytes:
    """A coding agent's conversation: a system prompt, a tool list, then tool calls and their results."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(f"w{rng.randrange(10_000)}" for _ in range(n))

    messages: list[dict[str, Any]] = [{"role": "system", "content": text(600)}, {"role": "user", "content": text(40)}]
    for i in range(turns):
        messages.append({"role": "assistant", "content": text(15), "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "read_file",
                                                                   "arguments": f'{{"path": "src/m{i}.py"}}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": text(110)})
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": text(30),
                                               "parameters": {"type": "object"}}} for i in range(6)]
    return orjson.dumps({"model": MODEL, "max_tokens": 8, "tools": tools, "messages": messages})


@pytest.fixture
async def worker() -> AsyncIterator[tuple[str, RecordingWorker]]:
    app = RecordingWorker()
    async with served(app, lifespan="off") as url:
        yield url, app


def _calls(stats: pstats.Stats, name: str, caller_file: str = "/gateway/") -> dict[str, int]:
    """Calls of the function ``name`` per calling function, for callers in files under ``caller_file``."""
    out: dict[str, int] = {}
    for (_, _, func), (_, _, _, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func != name and not func.endswith(f" {name}>") and not func.endswith(f".{name}>"):
            continue
        for (file, _, caller), counts in callers.items():
            if caller_file in file:
                out[caller] = out.get(caller, 0) + counts[0]
    return out


def _gateway_calls(stats: pstats.Stats) -> int:
    """Every function call made in the gateway's own code."""
    return sum(nc for (file, _, _), (_, nc, _, _, _) in stats.stats.items()  # type: ignore[attr-defined]
               if "/gateway/" in file)


async def _profiled(url: str, key: str, body: bytes) -> pstats.Stats:
    async with aiohttp.ClientSession() as http:
        profile = cProfile.Profile()
        profile.enable()
        async with http.post(url + "/v1/chat/completions", data=body,
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as resp:
            await resp.read()
        profile.disable()
        assert resp.status == 200
    return pstats.Stats(profile)


async def test_a_large_body_is_parsed_once_hashed_once_forwarded_as_sent(
        tmp_path: Any, worker: tuple[str, RecordingWorker]) -> None:
    url, recorder = worker
    backend = Backend("embedded", f"sqlite:///{tmp_path / 'gateway.db'}", "", "gw")
    gw = await serve_gateway(gateway_settings(backend, [url], routing_max_blocks=1024, health_interval_s=3600.0))
    try:
        rt = gw.app.runtime
        org = await rt.keys.get_or_create_org("large-bodies")
        await rt.billing.service.set_budget(org.id, "", 10**16)  # the budget stage estimates the prompt
        key = (await rt.keys.create_key(org.id, "test")).key
        small, large = conversation(30), conversation(125)  # ~31 KB and ~128 KB: 62 and 252 messages
        assert 110_000 < len(large) < 200_000 and 25_000 < len(small) < 50_000
        await _profiled(gw.url, key, small)  # warm: the key cache, first-use imports
        counts = {}
        for name, body in (("small", small), ("large", large)):
            stats = await _profiled(gw.url, key, body)
            loads = _calls(stats, "loads")
            assert loads.get("_loads") == 1, loads  # the request body: once
            assert sum(loads.values()) == 2, loads  # and the worker's answer
            # The chat adapter's one pass builds the canonical bytes (and finds the conversation's opening
            # in them), checks the nesting and the messages and counts the prompt estimate; nothing walks
            # the messages again (``chat_scan.py``).
            assert _calls(stats, "scan") == {"parse_body": 1}
            assert _calls(stats, "chat_canonical") == {}
            assert _calls(stats, "exceeds_encoded") == {} and _calls(stats, "too_deep") == {}
            assert _calls(stats, "_check_messages") == {} and _calls(stats, "estimate_prompt_tokens") == {}
            assert _calls(stats, "estimate") == {"plan": 1}  # the budget's reservation, from the scan's count
            assert _calls(stats, "hashes") == {"note_for": 1}  # the router's recent chains (chains.py)
            hashes = _calls(stats, "xxh3_64_intdigest")
            blocks = blocks_in_bytes(len(chat_bytes(orjson.loads(body))), 512)
            # Each block hashed once; none again for the small body, sent before (its chain is kept).
            assert hashes.get("block_hashes", 0) == (0 if name == "small" else blocks), hashes
            # The client's own bytes, not a re-encoding: the tenant's cache salt is spliced in before the
            # closing brace (an organisation's prompt cache is its own).
            sent = recorder.bodies[-1]
            assert sent[:len(body) - 1] == body[:-1] and _SALT.fullmatch(sent[len(body) - 1:]), sent[-80:]
            counts[name] = _gateway_calls(stats)
        # Linear at most: the gateway's calls grow less than the message count does (4.06x), and a
        # quadratic step (a copy per message, a re-scan per block) would show here as 16x.
        assert counts["large"] < 4 * counts["small"], counts

        # A streamed request: its body gains stream_options by a splice before the closing brace.
        streamed = orjson.dumps({**orjson.loads(large), "stream": True})
        stats = await _profiled(gw.url, key, streamed)
        assert _calls(stats, "loads").get("_loads") == 1
        sent = recorder.bodies[-1]
        assert sent.startswith(streamed[:-1] + b',"stream_options":{"include_usage":true}')
        assert _SALT.fullmatch(sent[len(streamed) - 1 + len(b',"stream_options":{"include_usage":true}'):])
    finally:
        await gw.stop()


async def test_hashing_stops_at_the_block_cap(tmp_path: Any, worker: tuple[str, RecordingWorker]) -> None:
    url, _ = worker
    backend = Backend("embedded", f"sqlite:///{tmp_path / 'gateway.db'}", "", "gw")
    gw = await serve_gateway(gateway_settings(backend, [url], routing_max_blocks=16, health_interval_s=3600.0))
    try:
        rt = gw.app.runtime
        org = await rt.keys.get_or_create_org("block-cap")
        key = (await rt.keys.create_key(org.id, "test")).key
        await _profiled(gw.url, key, conversation(100))  # warm (another conversation: its own opening)
        body = conversation(125)
        stats = await _profiled(gw.url, key, body)
        assert _calls(stats, "xxh3_64_intdigest").get("block_hashes") == 16
        stats = await _profiled(gw.url, key, body)  # the same again: its 16 blocks' hashes are kept
        assert _calls(stats, "xxh3_64_intdigest").get("block_hashes", 0) == 0
    finally:
        await gw.stop()
