"""Unauthenticated clients cannot exhaust the server: head and body deadlines, head size, header count,
idle keep-alive, a connection cap per process; service goes on for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.conftest import MODEL, Backend, ServedGateway, gateway_settings, serve_gateway
from workersim.run import RunningSim

CHAT = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2})


@contextlib.asynccontextmanager
async def guarded(tmp_path: Path, sims: list[RunningSim], **limits: Any) -> AsyncIterator[tuple[ServedGateway, str]]:
    """A gateway on the embedded backend with the given ``client_*`` limits, and an API key."""
    backend = Backend("embedded", f"sqlite:///{tmp_path / 'gateway.db'}", "", "gw")
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims], **limits))
    try:
        rt = served.app.runtime
        org = await rt.keys.get_or_create_org("guard-org")
        yield served, (await rt.keys.create_key(org.id, "k")).key
    finally:
        await served.stop()


@contextlib.asynccontextmanager
async def raw_connections(url: str, n: int = 1) -> AsyncIterator[list[tuple[asyncio.StreamReader,
                                                                          asyncio.StreamWriter]]]:
    """``n`` plain TCP connections to the gateway, closed on the way out (a failing test included, or
    the server's graceful stop would wait for them)."""
    host, port = url.removeprefix("http://").split(":")
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(n):
            conns.append(await asyncio.open_connection(host, int(port)))
        yield conns
    finally:
        for _, writer in conns:
            writer.close()


async def read_all(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sends until it closes the connection (fails if it does not close in time)."""
    chunks = []
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def chat_ok(url: str, key: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        url + "/v1/chat/completions", data=CHAT, headers={"x-api-key": key, "content-type": "application/json"}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["usage"]["completion_tokens"] == 2


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def error_code(response: bytes) -> str:
    return orjson.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"]  # type: ignore[no-any-return]


async def test_slow_loris_is_cut_after_the_head_timeout_while_others_are_served(
        tmp_path: Path, sims: list[RunningSim]) -> None:
    async with guarded(tmp_path, sims, client_header_timeout_s=0.6) as (served, key), \
            raw_connections(served.url) as [(reader, writer)]:
        opened = time.monotonic()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(100):  # a header every 50 ms: the head never completes
                    writer.write(f"x-slow-{i}: y\r\n".encode())
                    await writer.drain()
                    await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        try:
            await chat_ok(served.url, key)  # served while the slow client holds its connection
            response = await read_all(reader, within=3)
        finally:
            sender.cancel()
        cut_after = time.monotonic() - opened
        assert status_of(response) == 408 and error_code(response) == "request_timeout"
        assert 0.5 < cut_after < 2.5
        await chat_ok(served.url, key)


async def test_a_silent_connection_is_closed_after_the_head_timeout(tmp_path: Path, sims: list[RunningSim]) -> None:
    async with guarded(tmp_path, sims, client_header_timeout_s=0.4) as (served, _), \
            raw_connections(served.url) as [(reader, _)]:
        assert await read_all(reader, within=2) == b""  # closed without a word: there was no request


async def test_a_slow_body_is_cut_after_the_body_timeout(tmp_path: Path, sims: list[RunningSim]) -> None:
    async with guarded(tmp_path, sims, client_body_timeout_s=0.5) as (served, key):
        async with raw_connections(served.url) as [(reader, writer)]:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode() +
                         b"\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\": ")
            response = await read_all(reader, within=3)
        assert status_of(response) == 408 and error_code(response) == "request_timeout"
        await chat_ok(served.url, key)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_huge_header_is_431_without_holding_it_in_memory(tmp_path: Path, sims: list[RunningSim]) -> None:
    size = 24 * 1024 * 1024
    async with guarded(tmp_path, sims, client_max_header_bytes=32 * 1024) as (served, key):
        before = rss_bytes()
        async with raw_connections(served.url) as [(reader, writer)]:
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nx-huge: ")
            answer = asyncio.create_task(read_all(reader, within=10))
            chunk = b"a" * 65536
            sent = 0
            with contextlib.suppress(ConnectionError):
                while sent < size and not answer.done():  # a client that stops once it has the answer
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
            grown = rss_bytes() - before
            response = await answer
        assert status_of(response) == 431 and error_code(response) == "request_header_fields_too_large"
        assert grown < size // 3, f"RSS grew by {grown} bytes for a {sent}-byte header"
        assert sent < size // 4
        await chat_ok(served.url, key)


async def test_too_many_header_fields_are_431(tmp_path: Path, sims: list[RunningSim]) -> None:
    async with guarded(tmp_path, sims, client_max_headers=20) as (served, _), aiohttp.ClientSession() as http:
        fields = {f"x-field-{i}": "v" for i in range(30)}
        async with http.get(served.url + "/health", headers=fields) as resp:
            assert resp.status == 431
            assert (await resp.json())["error"]["code"] == "request_header_fields_too_large"
        async with http.get(served.url + "/health", headers=dict(list(fields.items())[:10])) as resp:
            assert resp.status == 200


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path, sims: list[RunningSim]) -> None:
    async with guarded(tmp_path, sims, client_keepalive_timeout_s=1) as (served, _), \
            raw_connections(served.url) as [(reader, writer)]:
        writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert status_of(head) == 200
        started = time.monotonic()
        await read_all(reader, within=4)  # the rest of the body, then the close
        assert 0.8 < time.monotonic() - started < 3


async def test_idle_connections_over_the_cap_do_not_lock_out_clients(tmp_path: Path,
                                                                     sims: list[RunningSim]) -> None:
    cap, idle = 50, 80
    async with guarded(tmp_path, sims, client_max_connections=cap, client_header_timeout_s=1.5) as (served, key):
        async with raw_connections(served.url, idle) as conns:
            await asyncio.sleep(0.3)
            # The oldest idle connections made room for the newer ones: never more than the cap open.
            closed = [i for i, (reader, _) in enumerate(conns) if reader.at_eof()]
            assert closed == list(range(idle - cap))
            await chat_ok(served.url, key)  # a client is served at once, the cap full of idle connections
            for reader, _ in conns:  # and the idle ones are reaped after the head timeout
                await read_all(reader, within=3)
        await chat_ok(served.url, key)


async def test_connections_over_the_cap_are_refused_while_all_are_busy(tmp_path: Path,
                                                                       sims: list[RunningSim]) -> None:
    cap = 10
    async with guarded(tmp_path, sims, client_max_connections=cap, client_body_timeout_s=30) as (served, key):
        async with raw_connections(served.url, cap) as busy:
            for _, writer in busy:  # each has a request in progress: its body is still to come
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
                await writer.drain()
            await asyncio.sleep(0.2)
            async with raw_connections(served.url) as [(reader, _)]:
                response = await read_all(reader, within=2)
            assert status_of(response) == 503 and error_code(response) == "too_many_connections"
        await asyncio.sleep(0.2)
        await chat_ok(served.url, key)  # the server goes on once the connections are gone
