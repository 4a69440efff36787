"""A lean HTTP/1.1 client for the workers: keep-alive connections per origin, each request written as
one block of bytes, each response parsed by httptools (the parser uvicorn serves with).

aiohttp's client spends ~100 us of CPU per request on this machine (its request and response objects,
header multidicts, timers, payload writers), more than any stage of the gateway; this client does the
one thing the hot path asks of it, POST a body and read the answer as it arrives, in ~20 us. It is the
I/O boundary of ``openai_worker``, and (``GET``, a pool of its own) of the workers' health checks and
metrics scrapes (``worker_probe.py``), so that serving workers never imports aiohttp.

Timeouts: ``connect`` for the TCP (and TLS) set-up; ``read`` for every wait on the worker (the headers,
then each chunk); ``total`` (non-streaming requests) a deadline for the whole answer. Failures are
:class:`HttpError` subclasses: :class:`ConnectFailed` / :class:`ConnectTimeout` (the request never
left), :class:`Disconnected` (the connection closed, or sent something that is not HTTP, before the
answer was complete), :class:`ReadTimeout`. A response is handed back with ``release()`` when read to
its end (its connection goes back to the pool if both sides keep it alive) or dropped with ``abort()``,
which closes the connection: the worker sees the cancel.

Not spoken, because no OpenAI-compatible worker sends them: ``100 Continue`` (no request carries
``Expect``) and bodies delimited by the connection's close (an HTTP/1.0-style answer without a length or
chunked encoding reads as :class:`Disconnected`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

_PAUSE_AT = 1 << 20  # buffered body bytes above which the socket stops being read until the relay catches up


class HttpError(Exception):
    """The worker's HTTP exchange failed."""


class ConnectFailed(HttpError):
    """No connection could be made: nothing was sent."""


class ConnectTimeout(ConnectFailed):
    """The connection was not made within the connect timeout."""


class Disconnected(HttpError):
    """The connection closed (or carried something that is not HTTP/1.1) before the answer was complete."""


class ReadTimeout(HttpError):
    """The worker sent nothing within the read timeout (or the answer's deadline passed)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a worker URL points: the pool's key, its TLS server name and the request line's prefix."""

    scheme: str
    host: str
    port: int
    base_path: str
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = port == (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        return cls(parts.scheme, host, port, parts.path.rstrip("/"),
                   (shown if default else f"{shown}:{port}").encode("idna"))


class Response:
    """One answer whose status line and headers arrived; its body is read with ``read`` or by iterating."""

    __slots__ = ("_buffered", "_chunks", "_complete", "_conn", "_deadline", "_error", "_read_timeout", "_timer",
                 "_waiter",
                 "content_length", "content_type", "keep_alive", "status")

    def __init__(self, conn: _Connection, read_timeout: float, deadline: float | None) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: HttpError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.content_type = "application/json"
        self.content_length: int | None = None
        self.keep_alive = False

    # -- fed by the connection ------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _PAUSE_AT:
            self._conn.pause()
        self._wake()

    def _fail(self, error: HttpError) -> None:
        if not self._complete and self._error is None:
            self._error = error
            self._wake()

    # -- read by the caller ---------------------------------------------------------------------------
    async def _wait(self) -> None:
        """Until the connection has news for this response, within the read timeout and the deadline.

        One timer per response, not per wait: it fires at the earliest moment the read timeout could have
        passed and re-arms itself from the last time data came (streams wait once per chunk)."""
        conn = self._conn
        if self._timer is None:
            self._arm(conn.last_data + self._read_timeout)
        self._waiter = conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _arm(self, when: float) -> None:
        if self._deadline is not None and self._deadline < when:
            when = self._deadline
        self._timer = self._conn.loop.call_at(when, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        if self._complete or self._error is not None:
            return
        now = self._conn.loop.time()
        if self._deadline is not None and now >= self._deadline:
            self._fail(ReadTimeout("the answer's deadline passed"))
        elif now - self._conn.last_data >= self._read_timeout:
            self._fail(ReadTimeout("the worker sent nothing in time"))
        elif self._waiter is not None:
            self._arm(self._conn.last_data + self._read_timeout)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _headers(self) -> None:
        while self.status == 0:
            if self._error is not None:
                raise self._error
            await self._wait()

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        while True:
            chunks = self._chunks
            if chunks:
                # What arrived together leaves together: one relay step (and one client write) for it all.
                chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self._conn.resume()
                return chunk
            if self._complete:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self, limit: int) -> bytes | None:
        """The whole body, or None once it passed ``limit`` bytes (the rest is not read)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool when it can carry another."""
        self._stop_timer()
        self._conn.finish(self._complete and not self._chunks and self.keep_alive)

    def abort(self) -> None:
        """Drop the answer and close its connection (the worker sees the request cancelled)."""
        self._stop_timer()
        self._conn.finish(False)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a worker; one response at a time."""

    def __init__(self, pool: Http1Pool, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.lost = False
        self.paused = False
        self.idle_since = 0.0
        self.last_data = loop.time()  # when the worker last sent anything (the read timeout counts from it)
        self._content_type: bytes | None = None
        self._content_length: bytes | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes on an idle connection: nothing may be trusted on it any more
            self.lost = True
            self._close()
            return
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.response._fail(Disconnected(f"the worker sent an invalid HTTP response ({exc})"))
            self.lost = True
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.response is not None:
            self.response._fail(Disconnected("the worker closed the connection"))

    # -- httptools callbacks --------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-type":
            self._content_type = value
        elif lowered == b"content-length":
            self._content_length = value

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        response.keep_alive = self.parser.should_keep_alive()
        if self._content_type is not None:
            response.content_type = self._content_type.decode("latin-1")
        if self._content_length is not None and self._content_length.isdigit():
            response.content_length = int(self._content_length)
        response._wake()

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._push(body)

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        response._complete = True
        response._wake()

    # -- used by the pool and the response ------------------------------------------------------------
    def send(self, head: bytes, body: bytes, read_timeout: float, deadline: float | None) -> Response:
        assert self.transport is not None
        self.last_data = self.loop.time()  # the wait for the answer starts now
        self.response = response = Response(self, read_timeout, deadline)
        self._content_type = self._content_length = None
        if len(body) <= 16384:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return response

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            self.transport.resume_reading()

    def finish(self, reusable: bool) -> None:
        if self.response is None:
            return
        self.response = None
        if reusable and not self.lost and not self.paused:
            self.pool._give_back(self)
        else:
            self._close()
            self.pool._forget()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to the workers, at most ``max_connections`` open (in use or idle) at once."""

    def __init__(self, ssl_context: ssl.SSLContext | None, max_connections: int, connect_timeout: float,
                 keepalive_s: float = 30.0) -> None:
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive_s
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._origins: dict[str, Origin] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._open = 0
        self._max = max_connections

    def origin(self, url: str) -> Origin:
        """The parsed worker URL (parsed once per URL: the fleet's URLs are few)."""
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = Origin.parse(url)
        return origin

    async def post(self, url: str, path: str, headers: Mapping[str, str], body: bytes, *, read_timeout: float,
                   total_timeout: float | None = None) -> Response:
        """Send ``body`` to ``url + path``; returns once the answer's status and headers arrived."""
        return await self._send(b"POST ", url, path, headers, body, read_timeout, total_timeout)

    async def get(self, url: str, path: str, headers: Mapping[str, str], *, read_timeout: float,
                  total_timeout: float | None = None) -> Response:
        """``GET url + path`` (no body, no Content-Length); returns once the status and headers arrived."""
        return await self._send(b"GET ", url, path, headers, None, read_timeout, total_timeout)

    async def _send(self, method: bytes, url: str, path: str, headers: Mapping[str, str], body: bytes | None,
                    read_timeout: float, total_timeout: float | None) -> Response:
        origin = self.origin(url)
        deadline = asyncio.get_running_loop().time() + total_timeout if total_timeout is not None else None
        head = _head(origin, method, path, headers, None if body is None else len(body))
        conn = self._idle_connection(origin) or await self._connect(origin)
        response = conn.send(head, body or b"", read_timeout, deadline)
        try:
            await response._headers()
        except BaseException:
            response.abort()
            raise
        return response

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed by the worker
            if not conn.lost and now - conn.idle_since < self._keepalive:
                return conn
            conn._close()
            self._forget()
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        if self._open >= self._max:
            self._drop_one_idle()
        await self._slots.acquire()
        self._open += 1
        loop = asyncio.get_running_loop()
        tls = self._tls(origin)
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self, origin, loop), origin.host,
                                                       origin.port, ssl=tls,
                                                       server_hostname=origin.host if tls is not None else None)
        except TimeoutError:
            self._forget()
            raise ConnectTimeout(f"no connection to {origin.host}:{origin.port} in {self._connect_timeout:g} s"
                                 ) from None
        except (OSError, ssl.SSLError) as exc:
            self._forget()
            raise ConnectFailed(f"cannot connect to {origin.host}:{origin.port}: {exc}") from None
        except BaseException:
            self._forget()
            raise
        return conn

    def _tls(self, origin: Origin) -> ssl.SSLContext | None:
        if origin.scheme != "https":
            return None
        if self._ssl is None:  # the system's CAs, loaded once, on the first https worker
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _give_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, deque()).append(conn)

    def _forget(self) -> None:
        """A connection closed: its slot is free."""
        self._open -= 1
        self._slots.release()

    def _drop_one_idle(self) -> None:
        for idle in self._idle.values():
            if idle:
                idle.popleft()._close()
                self._forget()
                return

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop()._close()
                self._forget()


def _head(origin: Origin, method: bytes, path: str, headers: Mapping[str, str], length: int | None) -> bytes:
    lines = [method, (origin.base_path + path).encode("latin-1"), b" HTTP/1.1\r\nHost: ", origin.host_header, b"\r\n"]
    if length is not None:
        lines += (b"Content-Length: ", b"%d" % length, b"\r\n")
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"\r\n")
    return b"".join(lines)
