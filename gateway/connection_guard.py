"""What uvicorn's HTTP protocol lacks against unauthenticated clients, added to its httptools protocol.

Per connection, before any application code runs:

- a **request-head deadline**: a new connection, and a request whose head spans several packets, must
  deliver the whole head (request line and headers) within ``header_timeout_s``, however slowly it
  trickles (slow loris); past it the connection gets a 408 (a silent one is just closed);
- a **body deadline**: the body must arrive within ``body_timeout_s`` of the head; past it the client
  gets a 408 and the application sees the client disconnect;
- a **head size and header count**: past ``max_header_bytes`` or ``max_headers`` the request gets a
  431 before the parser buffers more (httptools itself keeps a header value of any size in memory);
- a **connection cap** per process: at ``max_connections`` a new connection closes the connection idle
  the longest (no request in progress: silent, between keep-alive requests, or still sending its head),
  and is refused with a 503 only when every connection has a request in progress.

The idle keep-alive timeout is uvicorn's own (``timeout_keep_alive``). Errors are in OpenAI's shape.
A single request in one packet arms no timer: the deadlines start only when a head or body is split.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import errors

# Seconds an answered connection (408, 431, 400) reads and drops input before it closes.
_LINGER_S = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 10_000
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config carrying the limits to every connection of its server (and, pickled, to the
    server processes of ``--processes N``). ``idle`` orders this server's idle connections, oldest first."""

    def __init__(self, app: Any, limits: ConnectionLimits, **options: Any) -> None:
        super().__init__(app, http=GuardedHttpProtocol, **options)
        self.limits = limits
        self.idle: dict[GuardedHttpProtocol, None] = {}


def _response(exc: errors.GatewayError) -> bytes:
    """A whole response to write on a connection about to close, before any application ran."""
    body = exc.body_bytes()
    extra = "".join(f"{k}: {v}\r\n" for k, v in exc.headers.items())
    return b"".join((f"HTTP/1.1 {exc.status} {http.HTTPStatus(exc.status).phrase}\r\n".encode(),
                     f"content-type: application/json\r\nconnection: close\r\n{extra}".encode(),
                     f"content-length: {len(body)}\r\n\r\n".encode(), body))


class _HeadTooLarge(Exception):
    """Raised inside the parser's header callback: the head has too many header fields."""


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, GuardedConfig), "serve with gateway.server's config"
        self._limits = config.limits
        self._idle = config.idle
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = False  # a request head is being received
        self._in_body = False  # its body is being received
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False
        self._discarding = False  # answered: what still comes is read and dropped until the close

    # --- connections --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self._limits.max_connections and not self._evict_idle():
            self._refused = True
            self.transport = transport  # type: ignore[assignment]
            transport.write(_response(errors.too_many_connections()))  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._idle[self] = None
        self._arm(self._limits.header_timeout_s)

    def _evict_idle(self) -> bool:
        oldest = next(iter(self._idle), None)
        if oldest is None:
            return False
        self.logger.info("connection limit (%d) reached: closing the longest idle connection",
                         self._limits.max_connections)
        oldest._close()
        return True

    def _close(self) -> None:
        """Close now and forget this connection (its ``connection_lost`` comes later)."""
        self._disarm()
        self._idle.pop(self, None)
        self.connections.discard(self)
        if not self.transport.is_closing():
            self.transport.close()

    def _answer_and_close(self, exc: errors.GatewayError) -> None:
        """Send ``exc``, stop sending, and read (discarding) what the client still sends for a moment
        before closing: closing with unread input resets the connection, and the client would lose
        the answer. The connection still counts against the cap, and counts as idle (evictable)."""
        self._disarm()
        self.transport.write(_response(exc))
        if not self.transport.can_write_eof():
            self._close()
            return
        self.transport.write_eof()
        self._discarding = True
        self._idle[self] = None
        if self.flow is not None:
            self.flow.resume_reading()
        self._deadline = self.loop.call_later(_LINGER_S, self._close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._idle.pop(self, None)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        self._disarm()
        super().shutdown()

    # --- deadlines ----------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._in_body:
            self.logger.info("request body not received within %.1fs: connection closed",
                             self._limits.body_timeout_s)
            cycle = self.cycle
            answered = cycle.response_started
            cycle.disconnected = True  # the application's receive() answers http.disconnect
            cycle.message_event.set()
            if not answered:
                self._answer_and_close(errors.request_timeout("body"))
                return
        elif self._in_head:
            self.logger.info("request head not received within %.1fs: connection closed",
                             self._limits.header_timeout_s)
            self._answer_and_close(errors.request_timeout("head"))
            return
        self._close()

    # --- parsing --------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused or self._discarding:
            return
        self._unset_keepalive_if_required()
        if not self._in_body:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse_head()
            else:
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head:
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse_head()
                return
            self._arm(self._limits.header_timeout_s)
        elif self._in_body:
            self._arm(self._limits.body_timeout_s)

    def _refuse_head(self) -> None:
        self.logger.info("request head over %d bytes or %d fields: refused", self._limits.max_header_bytes,
                         self._limits.max_headers)
        self._answer_and_close(errors.header_too_large(self._limits.max_header_bytes, self._limits.max_headers))

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(errors.invalid_request(msg, code="invalid_http_request"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        self._in_body = True
        self._head_bytes = 0
        self._idle.pop(self, None)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._in_body:
            self._in_body = False
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing():
            self._idle[self] = None
