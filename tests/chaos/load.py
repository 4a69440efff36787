"""The load driver: a few concurrent clients of the official openai SDK (async), mixed streaming and
whole answers, chat and legacy completions, spread over the replicas like a load balancer would.

Every request carries a unique tag as ``user`` (the ledger's ``end_user``), so a ledger row can be
matched to the client request even when the client never saw the ``x-request-id`` (a request cut
before the answer). A client that cannot connect to a replica skips it for half a second (a load
balancer's health check) and goes on with the next one. While ``cut_share`` > 0 that share of the
requests is abandoned by the client: streams after their first content chunks, whole answers a few
tens of milliseconds in (while the worker is still generating).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from tests.chaos.cluster import MODEL

_PREFIXES = [
    "You are a careful assistant for a logistics company. Answer briefly. " * 6,
    "You review Python code for correctness and style; list concrete problems. " * 6,
    "You translate short product descriptions into plain English for a catalogue. " * 6,
]
# Newer SDKs wrap a connection dropped mid-stream in APIConnectionError; older ones let httpx's error out.
_TRANSPORT_ERRORS = (openai.APIConnectionError, httpx.HTTPError)
_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
          "mike", "november"]


@dataclass
class LoadProfile:
    """How much load, of what kind; the defaults are sized for CI (a few seconds a scenario)."""

    clients: int = 4  # clients of the main key
    limited_clients: int = 2  # clients of the rate-limited key (small requests, paced)
    limited_pause_s: float = 0.05
    limited_rpm: int = 6  # the rate-limited key's requests per minute: well below what its clients send
    stream_share: float = 0.5
    completions_share: float = 0.2
    max_tokens: tuple[int, int] = (8, 40)
    cut_share: float = 0.5  # of requests abandoned during the client-cut fault
    before_s: float = 1.0  # load before the fault starts
    after_s: float = 2.5  # load after the fault ended (recovery)
    request_timeout_s: float = 20.0
    # How long the ledger may take to hold every row (it takes about a second: writers flush every 0.2 s).
    settle_timeout_s: float = 8.0

    @property
    def main_concurrency(self) -> int:
        """The main key's concurrency limit: above what its clients ever hold at once, also on one replica
        alone while Redis is unreachable (each of two replicas then holds half)."""
        return 2 * (self.clients + 1)


@dataclass
class Outcome:
    """What one client request saw."""

    tag: str
    key: str  # "main", "limited" or "probe"
    replica: int
    stream: bool
    started: float  # time.monotonic()
    ended: float = 0.0
    # ok: a complete answer; cut: the client abandoned it; http_error: an error status; stream_error: an
    # error event inside a stream; transport: no HTTP answer (connection refused or dropped); hung.
    result: str = ""
    status: int | None = None
    request_id: str | None = None
    worker: str | None = None  # x-gateway-worker
    usage: tuple[int, int, int] | None = None  # prompt, cached, completion (as the client saw them)
    admitted: bool = False  # the rate limiter let it through (x-ratelimit-* headers on a non-429)
    limit_requests: int | None = None  # x-ratelimit-limit-requests seen
    error: str = ""

    @property
    def five_xx(self) -> bool:
        return self.result == "stream_error" or (self.status is not None and self.status >= 500)


def _usage(obj: Any) -> tuple[int, int, int] | None:
    usage = getattr(obj, "usage", None)
    if usage is None:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return int(usage.prompt_tokens), int(cached), int(usage.completion_tokens)


@dataclass
class LoadDriver:
    replicas: list[str]  # gateway base URLs
    keys: dict[str, str]  # "main" / "limited" -> API key
    profile: LoadProfile
    seed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    cut_share: float = 0.0  # set by the client-cut fault while it lasts
    # Streams whose answer started and has not ended: tag -> the worker serving it (x-gateway-worker).
    streaming: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._stop = asyncio.Event()
        self._skip_until = [0.0] * len(self.replicas)
        self._clients: dict[tuple[int, str], openai.AsyncOpenAI] = {}
        self._seq = 0

    def _client(self, replica: int, key: str) -> openai.AsyncOpenAI:
        client = self._clients.get((replica, key))
        if client is None:
            # Idle connections are dropped before the gateway's own keep-alive timeout (5 s) closes them:
            # with no retries, a request sent on a connection the server is closing at that moment fails
            # as a transport error that says nothing about the fault (httpx's default expiry is also 5 s).
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=2.0)
            http = openai.DefaultAsyncHttpxClient(limits=limits)
            client = openai.AsyncOpenAI(base_url=self.replicas[replica] + "/v1", api_key=self.keys[key],
                                        max_retries=0, timeout=self.profile.request_timeout_s, http_client=http)
            self._clients[(replica, key)] = client
        return client

    def _pick_replica(self, preferred: int) -> int:
        now = time.monotonic()
        for step in range(len(self.replicas)):
            i = (preferred + step) % len(self.replicas)
            if self._skip_until[i] <= now:
                return i
        return preferred % len(self.replicas)

    def _tag(self, key: str) -> str:
        self._seq += 1
        return f"chaos-{key}-{self.seed}-{self._seq}"

    # -- the clients ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every client until ``stop``."""
        tasks = [asyncio.create_task(self._main_client(i)) for i in range(self.profile.clients)]
        tasks += [asyncio.create_task(self._limited_client(i)) for i in range(self.profile.limited_clients)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    async def _main_client(self, index: int) -> None:
        turn = index
        while not self._stop.is_set():
            turn += 1
            p = self.profile
            stream = self._rng.random() < p.stream_share
            chat = self._rng.random() >= p.completions_share
            cut = self.cut_share > 0 and self._rng.random() < self.cut_share
            low, high = p.max_tokens
            max_tokens = self._rng.randint(max(low, 30) if cut else low, max(high, 40) if cut else high)
            await self.request("main", self._pick_replica(turn), stream=stream, chat=chat, max_tokens=max_tokens,
                               cut=cut)

    async def _limited_client(self, index: int) -> None:
        turn = index
        while not self._stop.is_set():
            turn += 1
            await self.request("limited", self._pick_replica(turn), stream=False, chat=True, max_tokens=2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.profile.limited_pause_s)

    async def probe(self, n: int, max_tokens: int = 60) -> list[Outcome]:
        """``n`` concurrent streams on the main key (they overlap: each takes max_tokens / decode speed)."""
        results = await asyncio.gather(*(self.request("probe", self._pick_replica(i), stream=True, chat=True,
                                                      max_tokens=max_tokens, key_name="main")
                                         for i in range(n)))
        return list(results)

    # -- one request ------------------------------------------------------------------------------------
    async def request(self, kind: str, replica: int, *, stream: bool, chat: bool, max_tokens: int,
                      cut: bool = False, key_name: str | None = None) -> Outcome:
        tag = self._tag(kind)
        out = Outcome(tag, kind, replica, stream, time.monotonic())
        self.outcomes.append(out)
        client = self._client(replica, key_name or kind)
        try:
            await asyncio.wait_for(self._send(out, client, chat, max_tokens, cut), self.profile.request_timeout_s + 5)
        except TimeoutError:
            out.result, out.error = "hung", "no answer within the request timeout"
        except openai.APIStatusError as exc:
            out.result, out.status, out.error = "http_error", exc.status_code, str(exc)[:200]
            self._headers(out, exc.response.headers)
        except _TRANSPORT_ERRORS as exc:  # no answer, or the connection dropped mid-stream: the replica is down
            out.result, out.error = "transport", repr(exc)[:200]
            self._skip_until[replica] = time.monotonic() + 0.5
        except openai.APIError as exc:  # an error event inside a stream
            out.result, out.error = "stream_error", str(exc)[:200]
        finally:
            out.ended = time.monotonic()
        return out

    @staticmethod
    def _headers(out: Outcome, headers: Mapping[str, str]) -> None:
        out.request_id = headers.get("x-request-id") or out.request_id
        out.worker = headers.get("x-gateway-worker") or out.worker
        limit = headers.get("x-ratelimit-limit-requests")
        if limit is not None:
            out.limit_requests = int(limit)
        out.admitted = out.status != 429 and limit is not None

    async def _send(self, out: Outcome, client: openai.AsyncOpenAI, chat: bool, max_tokens: int, cut: bool) -> None:
        prefix = self._rng.choice(_PREFIXES)
        words = " ".join(self._rng.choices(_WORDS, k=self._rng.randint(3, 40)))
        args: dict[str, Any] = {"model": MODEL, "max_tokens": max_tokens, "user": out.tag}
        if chat:
            args["messages"] = [{"role": "system", "content": prefix}, {"role": "user", "content": words}]
            api: Any = client.chat.completions.with_raw_response
        else:
            args["prompt"] = prefix + words
            api = client.completions.with_raw_response
        if out.stream:
            args["stream"] = True
            args["stream_options"] = {"include_usage": True}
            await self._stream(out, api, args, cut)
        elif cut:
            await self._abandoned(out, api, args)
        else:
            raw = await api.create(**args)
            out.status = raw.status_code
            self._headers(out, raw.headers)
            out.usage = _usage(raw.parse())
            out.result = "ok"

    async def _stream(self, out: Outcome, api: Any, args: dict[str, Any], cut: bool) -> None:
        raw = await api.create(**args)
        out.status = raw.status_code
        self._headers(out, raw.headers)
        stream = raw.parse()
        pieces = 0
        if out.worker:
            self.streaming[out.tag] = out.worker
        try:
            async for chunk in stream:
                if chunk.choices:
                    c = chunk.choices[0]
                    text = c.delta.content if hasattr(c, "delta") else c.text
                    pieces += 1 if text else 0
                usage = _usage(chunk)
                if usage is not None:
                    out.usage = usage
                if cut and pieces >= 2:
                    out.result = "cut"
                    return
        finally:
            self.streaming.pop(out.tag, None)
            await stream.close()
        out.result = "ok" if out.usage is not None else "stream_error"
        if out.usage is None:
            out.error = "the stream ended without a usage chunk"

    async def _abandoned(self, out: Outcome, api: Any, args: dict[str, Any]) -> None:
        task = asyncio.create_task(api.create(**args))
        done, _ = await asyncio.wait({task}, timeout=self._rng.uniform(0.03, 0.1))
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            out.result = "cut"
            return
        raw = task.result()
        out.status = raw.status_code
        self._headers(out, raw.headers)
        out.usage = _usage(raw.parse())
        out.result = "ok"
