"""A lean Redis client for the hot path: one multiplexed connection, commands pipelined in order.

redis-py's asyncio client spends 120-200 us of CPU per command on this machine, more than the
rest of the gateway's work per request; this client encodes the few commands the round trips send
(EVAL, EVALSHA, and AUTH/SELECT on connect) straight to RESP bytes and parses replies with hiredis's C reader,
for ~15 us per round trip. Every caller shares one connection: Redis answers in order, so each
round trip waits for its own slice of replies (a FIFO of futures), and writes made in the same
event-loop turn leave in one syscall. A cancelled caller's replies are read and dropped.

Replies: integers as ``int``, bulk and simple strings as ``bytes``, nil as ``None``, arrays as
``list``, errors as :class:`RespError` values (not raised) so that one failed command does not hide
the others' results. A lost connection fails every waiting round trip with :class:`RespUnavailable`;
the next call reconnects. While a batch is in flight, later commands wait for its replies and leave
together (auto-pipelining): under load, one write and one read serve many requests.

``redis://`` and ``rediss://`` (TLS), with a password or an ACL user and password. On Redis Cluster,
``resp_cluster.ClusterResp`` holds one of these clients per master and routes each command by slot.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from hiredis import ProtocolError, Reader, pack_command


class RespError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``)."""

    @property
    def noscript(self) -> bool:
        return str(self).startswith("NOSCRIPT")


class RespUnavailable(ConnectionError):
    """The connection failed or was lost."""


def encode(args: Sequence[Any]) -> bytes:
    """One command in RESP (an array of bulk strings): hiredis's encoder, in C, for ``str``, ``bytes``,
    ``int`` and ``float`` arguments; anything else (``bool``, an ``int`` subclass) through ``_encode``."""
    try:
        packed: bytes = pack_command(tuple(args))
    except TypeError:
        return _encode(args)
    return packed


def _encode(args: Sequence[Any]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is int:
            data = b"%d" % arg
        elif kind is str:
            data = arg.encode()
        elif kind is bytes:
            data = arg
        elif isinstance(arg, int | float):
            data = str(arg).encode()
        else:
            raise TypeError(f"cannot send {kind.__name__} to Redis")
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self, reply_timeout: float) -> None:
        self.transport: Any = None  # asyncio.Transport (uvloop's is not a subclass)
        self._reader = Reader(replyError=RespError)  # hiredis's reply parser, in C
        self._out: list[bytes] = []
        # (commands, replies so far, future, deadline for the last reply)
        self._waiting: deque[tuple[int, list[Any], asyncio.Future[list[Any]], float]] = deque()
        self._reply_timeout = reply_timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._unanswered = 0  # commands written whose replies have not all arrived
        self._flush_pending = False
        self.lost: RespUnavailable | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self.lost or RespUnavailable(f"connection to Redis lost: {exc or 'closed by server'}"))

    def _fail(self, error: RespUnavailable) -> None:
        self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            _, _, fut, _ = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(error)

    def _check_replies(self, loop: asyncio.AbstractEventLoop) -> None:
        """A hung Redis (frozen, overloaded, a half-open connection) must not hang requests: when the
        oldest round trip waits past its deadline, the connection is dropped and every waiting round
        trip fails over to local state; the next call reconnects."""
        self._watchdog = None
        if not self._waiting:
            return
        if self._waiting[0][3] <= loop.time():
            self._fail(RespUnavailable(f"Redis did not answer within {self._reply_timeout}s"))
            if self.transport is not None:
                self.transport.abort()
            return
        self._watchdog = loop.call_later(self._reply_timeout / 4, self._check_replies, loop)

    def send(self, commands: list[bytes], loop: asyncio.AbstractEventLoop) -> asyncio.Future[list[Any]]:
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if self.lost is not None or self.transport is None:
            fut.set_exception(self.lost or RespUnavailable("not connected"))
            return fut
        self._out.extend(commands)
        self._waiting.append((len(commands), [], fut, loop.time() + self._reply_timeout))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._reply_timeout / 4, self._check_replies, loop)
        # Auto-pipelining: while a batch is in flight, later commands wait for its replies and then
        # leave together; otherwise they leave at the end of this event-loop turn.
        if not self._flush_pending and not self._unanswered:
            self._flush_pending = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_pending = False
        if self._out and self.transport is not None and self.lost is None:
            self.transport.write(b"".join(self._out))
            self._unanswered += len(self._out)
        self._out.clear()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while self._waiting:
                reply = reader.gets()
                if reply is False:  # the rest of a reply is still on its way
                    break
                self._unanswered -= 1
                count, replies, fut, _ = self._waiting[0]
                replies.append(reply)
                if len(replies) == count:
                    self._waiting.popleft()
                    if not fut.done():
                        fut.set_result(replies)
        except ProtocolError as exc:
            self.lost = RespUnavailable(f"bad reply from Redis: {exc}")
            if self.transport is not None:
                self.transport.close()
            return
        if self._out and not self._unanswered and not self._flush_pending:
            self._flush()


@dataclass(frozen=True, slots=True)
class RespTarget:
    """Where and how to connect: one node's address, credentials and TLS (shared by a cluster's nodes)."""

    host: str = "127.0.0.1"
    port: int = 6379
    user: str | None = None
    password: str | None = None
    db: int = 0
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_url(cls, url: str) -> RespTarget:
        """``redis://`` or ``rediss://`` (TLS), with ``user:password@`` and the query options redis-py reads
        for TLS: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (none, optional,
        required) and ``ssl_check_hostname``."""
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError("the lean client speaks redis:// and rediss:// only")
        path = (parsed.path or "/").lstrip("/")
        return cls(host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379,
                   user=unquote(parsed.username) if parsed.username else None,
                   password=unquote(parsed.password) if parsed.password else None,
                   db=int(path) if path else 0,
                   tls=tls_context(parse_qs(parsed.query)) if parsed.scheme == "rediss" else None)

    def at(self, host: str, port: int) -> RespTarget:
        """The same credentials and TLS for another node."""
        return RespTarget(host, port, self.user, self.password, self.db, self.tls)


def tls_context(query: dict[str, list[str]]) -> ssl.SSLContext:
    def opt(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    ctx = ssl.create_default_context(cafile=opt("ssl_ca_certs"))
    certfile = opt("ssl_certfile")
    if certfile:
        ctx.load_cert_chain(certfile, opt("ssl_keyfile"))
    reqs = (opt("ssl_cert_reqs") or "required").lower()
    check = opt("ssl_check_hostname")
    ctx.check_hostname = reqs == "required" and (check is None or check.lower() in ("1", "true", "yes"))
    ctx.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(reqs, ssl.CERT_REQUIRED)
    return ctx


class RespClient:
    """``await client.execute([cmd, ...])`` returns the replies of commands sent in one round trip."""

    def __init__(self, url: str | RespTarget, connect_timeout: float = 1.0, reply_timeout: float = 1.0) -> None:
        target = url if isinstance(url, RespTarget) else RespTarget.from_url(url)
        self.target = target
        self._host = target.host
        self._port = target.port
        self._password = target.password
        self._user = target.user
        self._db = target.db
        self._tls = target.tls
        self._timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self._reply_timeout), self._host, self._port,
                                       ssl=self._tls, server_hostname=self._host if self._tls else None),
                self._timeout)
        except (OSError, TimeoutError) as exc:
            raise RespUnavailable(f"cannot connect to Redis at {self._host}:{self._port}: {exc}") from exc
        hello: list[bytes] = []
        if self._password is not None:
            hello.append(encode(["AUTH", self._user, self._password] if self._user else ["AUTH", self._password]))
        if self._db:
            hello.append(encode(["SELECT", self._db]))
        if hello:
            for reply in await proto.send(hello, loop):
                if isinstance(reply, RespError):
                    proto.transport.close()
                    raise RespUnavailable(f"Redis refused the connection setup: {reply}")
        return proto

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            try:
                self._proto = await asyncio.shield(self._connecting)
            finally:
                self._connecting = None
            return self._proto
        return await asyncio.shield(self._connecting)

    async def submit(self, commands: list[bytes]) -> asyncio.Future[list[Any]]:
        """Queue ``commands`` on the connection (connecting first if needed); the future holds their
        replies. Several nodes' batches can be submitted before awaiting any: they travel in parallel."""
        proto = self._proto
        if proto is None or proto.lost is not None:
            proto = await self._connection()
        return proto.send(commands, asyncio.get_running_loop())

    async def execute(self, commands: list[bytes]) -> list[Any]:
        proto = self._proto
        if proto is None or proto.lost is not None:
            proto = await self._connection()
        return await proto.send(commands, asyncio.get_running_loop())

    async def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
