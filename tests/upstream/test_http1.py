"""The workers' lean HTTP/1.1 client (``gateway/upstream/http1.py``) against raw asyncio servers that
misbehave on purpose, on asyncio's loop and on uvloop (which the gateway serves with)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.pipeline.contract import ProbeFailed
from gateway.upstream.http1 import ConnectFailed, Disconnected, Http1Pool, Origin, ReadTimeout
from gateway.upstream.worker_probe import WorkerProbe

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(loop_name: str, main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(main)


class Server:
    """A loopback server; ``handler`` serves each connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%b\r\n%b" % (
        len(body), extra, body)


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head, body = await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        writer.write(answer(b'{"echo": %d, "path": "%b"}' % (len(body), head.split(b" ")[1])))
        await writer.drain()


@pytest.fixture(params=list(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pool(limit: int = 10) -> Http1Pool:
    return Http1Pool(None, limit, connect_timeout=2.0)


def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given(loop_name: str) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(answer(b'{"n": %d}' % len(seen)))

    async def main() -> None:
        async with Server(handler) as server:
            http = pool()
            for n in (1, 2, 3):
                resp = await http.post(server.url + "/base/", "/v1/chat/completions", {"x-request-id": "r1"},
                                       b'{"a": 1}', read_timeout=5)
                assert resp.status == 200 and resp.content_type == "application/json" and resp.content_length == 8
                assert await resp.read(1000) == b'{"n": %d}' % n
                resp.release()
            assert server.connections == 1
            http.close()
        first = seen[0]
        assert first.startswith(b"POST /base/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nContent-Length: 8\r\n" in first and b"\r\nx-request-id: r1\r\n" in first
        assert first.endswith(b'\r\n\r\n{"a": 1}')

    run(loop_name, main())


def test_a_chunked_stream_arrives_as_it_is_sent(loop_name: str) -> None:
    async def main() -> None:
        go_on = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"6\r\ndata 1\r\n")
            await writer.drain()
            await go_on.wait()  # the second chunk only once the client holds the first
            writer.write(b"6\r\ndata 2\r\n0\r\n\r\n")
            await writer.drain()
            await reader.read()

        async with Server(handler) as server:
            http = pool()
            resp = await http.post(server.url, "/s", {}, b"{}", read_timeout=5)
            assert resp.content_type == "text/event-stream" and resp.content_length is None
            assert await anext(resp) == b"data 1"
            go_on.set()
            assert [chunk async for chunk in resp] == [b"data 2"]
            resp.release()
            http.close()

    run(loop_name, main())


def test_silence_past_the_read_timeout_and_the_deadline(loop_name: str) -> None:
    async def main() -> None:
        async def headers_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await asyncio.sleep(5)

        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(100):  # a byte every 50 ms: never silent for the read timeout
                writer.write(b"1\r\nx\r\n")
                await asyncio.sleep(0.05)

        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(5)

        async with Server(headers_then_silence) as silent, Server(trickle) as slow, Server(mute) as muted:
            http = pool()
            resp = await http.post(silent.url, "/", {}, b"{}", read_timeout=0.2)
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(ReadTimeout):
                await resp.read(100)
            assert 0.15 < asyncio.get_running_loop().time() - t0 < 2
            resp.abort()
            with pytest.raises(ReadTimeout):  # no headers at all within the read timeout
                await http.post(muted.url, "/", {}, b"{}", read_timeout=0.1)
            resp = await http.post(slow.url, "/", {}, b"{}", read_timeout=0.5, total_timeout=0.4)
            with pytest.raises(ReadTimeout, match="deadline"):
                await resp.read(10_000)
            resp.abort()
            http.close()

    run(loop_name, main())


def test_a_cut_answer_and_garbage_are_disconnects(loop_name: str) -> None:
    async def main() -> None:
        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")

        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"SMTP ready\r\n\r\n")
            await asyncio.sleep(1)

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)

        async with Server(cut) as s1, Server(garbage) as s2, Server(hang_up) as s3:
            http = pool()
            resp = await http.post(s1.url, "/", {}, b"{}", read_timeout=5)
            with pytest.raises(Disconnected):
                await resp.read(1000)
            resp.abort()
            with pytest.raises(Disconnected, match="invalid HTTP"):
                await http.post(s2.url, "/", {}, b"{}", read_timeout=5)
            with pytest.raises(Disconnected, match="closed"):
                await http.post(s3.url, "/", {}, b"{}", read_timeout=5)
            with pytest.raises(ConnectFailed):
                await http.post(s3.url.rsplit(":", 1)[0] + ":1", "/", {}, b"{}", read_timeout=5)
            http.close()

    run(loop_name, main())


def test_abort_closes_the_connection_and_an_unread_answer_is_not_reused(loop_name: str) -> None:
    async def main() -> None:
        eof = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            if await reader.read() == b"":
                eof.set()

        async with Server(handler) as server:
            http = pool()
            resp = await http.post(server.url, "/", {}, b"{}", read_timeout=5)
            assert await anext(resp) == b"abc"
            resp.abort()
            await asyncio.wait_for(eof.wait(), 5)  # the worker sees the cancel
            eof.clear()
            resp = await http.post(server.url, "/", {}, b"{}", read_timeout=5)
            resp.release()  # not read to its end: the connection cannot carry another request
            await asyncio.wait_for(eof.wait(), 5)
            assert server.connections == 2
            http.close()

    run(loop_name, main())


def test_connection_close_and_the_connection_limit(loop_name: str) -> None:
    async def main() -> None:
        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(0.1)
            writer.write(answer(b"{}", b"Connection: close\r\n"))
            await writer.drain()

        async with Server(once) as server, Server(echo_forever) as echo:
            http = pool(limit=1)
            first = asyncio.ensure_future(http.post(server.url, "/", {}, b"{}", read_timeout=5))
            await asyncio.sleep(0.02)
            second = asyncio.ensure_future(http.post(server.url, "/", {}, b"{}", read_timeout=5))
            await asyncio.sleep(0.05)
            assert not second.done() and server.connections == 1  # waits for the one connection allowed
            resp = await first
            assert await resp.read(10) == b"{}" and not resp.keep_alive
            resp.release()  # "Connection: close": not pooled, its slot is free
            resp = await second
            assert await resp.read(10) == b"{}"
            resp.release()
            assert server.connections == 2
            # an idle connection to another worker gives its slot up when the limit is reached
            resp = await http.post(echo.url, "/x", {}, b"12345", read_timeout=5)
            assert await resp.read(100) == b'{"echo": 5, "path": "/x"}'
            resp.release()
            http.close()

    run(loop_name, main())


def test_origins_and_header_injection() -> None:
    assert Origin.parse("http://10.0.0.1:8000/vllm/") == Origin("http", "10.0.0.1", 8000, "/vllm", b"10.0.0.1:8000")
    assert Origin.parse("https://worker.example").host_header == b"worker.example"
    assert Origin.parse("https://worker.example").port == 443
    assert Origin.parse("http://[::1]:9000").host_header == b"[::1]:9000"
    with pytest.raises(ValueError):
        Origin.parse("ftp://x")

    async def main() -> None:
        async with Server(echo_forever) as server:
            http = pool()
            with pytest.raises(ValueError, match="line break"):
                await http.post(server.url, "/", {"x-bad": "a\r\nInjected: 1"}, b"{}", read_timeout=5)
            http.close()

    run("asyncio", main())


def test_the_workers_probe_gets_without_a_body_and_fails_cleanly(loop_name: str) -> None:
    """The health checks' transport (``worker_probe.py``): a GET with no Content-Length, the answer read
    whole on a kept-alive connection; a mute worker, a cut answer or one over the limit is ``ProbeFailed``
    within the timeout, never aiohttp's or the client's own exception."""
    seen: list[bytes] = []

    async def metrics(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            seen.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nvllm:\r\n3\r\n1 2\r\n0\r\n\r\n")

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

    async def main() -> None:
        async with Server(metrics) as good, Server(mute) as muted, Server(cut) as broken, \
                WorkerProbe(pool()) as probe:
            for _ in range(2):
                assert await probe.get(good.url + "/base", "/metrics", {"authorization": "Bearer k"}, 2.0,
                                       1000) == (200, b"vllm:1 2")
            assert good.connections == 1  # kept alive between checks
            assert seen[0].startswith(b"GET /base/metrics HTTP/1.1\r\nHost: 127.0.0.1:")
            assert b"content-length" not in seen[0].lower() and b"\r\nauthorization: Bearer k\r\n" in seen[0]
            with pytest.raises(ProbeFailed, match="over 5 bytes"):
                await probe.get(good.url, "/metrics", {}, 2.0, 5)
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(ProbeFailed, match="/health"):
                await probe.get(muted.url, "/health", {}, 0.2, 1000)
            assert asyncio.get_running_loop().time() - t0 < 1.5
            with pytest.raises(ProbeFailed):
                await probe.get(broken.url, "/v1/models", {}, 2.0, 1000)

    run(loop_name, main())
