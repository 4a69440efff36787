"""Who may read /metrics (worker URLs, per-model traffic): a bearer token and/or a separate listener.

``GATEWAY_METRICS_TOKEN`` makes /metrics answer only ``Authorization: Bearer <token>``.
``GATEWAY_METRICS_ADDRESS`` (host:port) serves /metrics on a second small server in each server
process (bound with SO_REUSEPORT, so ``--processes N`` share it) and takes it off the main port.
Neither set: /metrics is open on the main port.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import errors
from gateway.asgi import Receive, Scope, Send, header, send_error, send_response
from gateway.config import Settings
from gateway.observability.prometheus import GatewayMetrics
from gateway.server import server_config


def check_token(token: str, authorization: str | bytes | None) -> None:
    """Raise a 401 unless ``token`` is empty or ``authorization`` is ``Bearer <token>``."""
    if not token:
        return
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise errors.GatewayError(401, "/metrics needs 'Authorization: Bearer <GATEWAY_METRICS_TOKEN>'.",
                                  code="missing_api_key", headers={"www-authenticate": "Bearer"})
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise errors.GatewayError(401, "Incorrect metrics token provided.", code="invalid_api_key",
                                  headers={"www-authenticate": "Bearer"})


class MetricsApp:
    """The metrics listener's whole ASGI app: ``GET /metrics``, nothing else."""

    def __init__(self, metrics: GatewayMetrics, token: str) -> None:
        self._metrics = metrics
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            if scope["path"] != "/metrics":
                raise errors.not_found("Only /metrics is served here.")
            if scope["method"] not in ("GET", "HEAD"):
                raise errors.method_not_allowed()
            check_token(self._token, header(scope, b"authorization"))
        except errors.GatewayError as exc:
            await send_error(send, exc, [])
            return
        await send_response(send, 200, self._metrics.exposition(),
                            [(b"content-type", CONTENT_TYPE_LATEST.encode())])


def _listening_socket(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family, kind, proto, _, where = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # every server process binds it
        sock.bind(where)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _ListenerServer(uvicorn.Server):
    """Runs beside the main server in its loop: the main server handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def metrics_listener(settings: Settings, metrics: GatewayMetrics) -> AsyncIterator[str | None]:
    """Serve /metrics on ``settings.metrics_address`` while inside; yields its URL (None when not set)."""
    if not settings.metrics_address:
        yield None
        return
    sock = _listening_socket(settings.metrics_address)
    host, port = sock.getsockname()[:2]
    config = server_config(MetricsApp(metrics, settings.metrics_token), settings, max_connections=64,
                           lifespan="off", log_config=None, loop="none")
    server = _ListenerServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"the metrics listener on {settings.metrics_address} did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    finally:
        server.should_exit = True
        await task
