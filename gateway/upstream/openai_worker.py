"""The back adapter for OpenAI-compatible workers (vLLM, SGLang): one pool of keep-alive HTTP/1.1
connections for all of them (``http1.Http1Pool``), built in the app's lifespan (``make_pool``; the health
checks have a pool of their own, ``worker_probe.py``).

``OpenAIWorkers.open`` posts the forwarded body and returns once the worker's response headers
arrived. Failures that another worker may not share (it could not be reached, it dropped the
connection, it did not answer in time) are ``Retryable``; the forwarder decides whether to try again.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from gateway import errors
from gateway.config import Settings
from gateway.pipeline.contract import Misconfigured, Retryable
from gateway.pipeline.exchange import Exchange
from gateway.upstream.http1 import (
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    Http1Pool,
    HttpError,
    ReadTimeout,
    Response,
)

# What counts as "the connection failed" while a body is read: the answer is cut (a worker's, or a
# hosted provider's stream, whose adapter raises ``ProviderStreamCut``, a ``Disconnected``).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (HttpError, TimeoutError)


# Client headers a worker may see (see docs/operations.md); the affinity ones only when configured. Never
# authorization, x-api-key, cookies or proxy credentials, whatever the settings say.
FORWARDED_HEADERS = ("user-agent", "x-client-request-id")
AFFINITY_HEADERS = ("x-session-id", "x-grok-conv-id")
NEVER_FORWARDED = frozenset({"authorization", "x-api-key", "cookie", "set-cookie", "proxy-authorization",
                             "host", "content-length", "content-type", "transfer-encoding", "connection",
                             "x-request-id"})


class WorkerTarget(Protocol):
    """A worker as this adapter needs it: where it is and what it is sent (its key, its extra headers)."""

    @property
    def id(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


def forwarded_header_names(settings: Settings) -> tuple[str, ...]:
    names = [*FORWARDED_HEADERS, *(AFFINITY_HEADERS if settings.upstream_forward_affinity_headers else ())]
    names += [h.strip().lower() for h in settings.upstream_forward_headers if h.strip()]
    return tuple(dict.fromkeys(n for n in names if n not in NEVER_FORWARDED))


def tls_context(settings: Settings) -> ssl.SSLContext | bool:
    """How https:// workers are verified: against ``upstream_ca_bundle`` when set, else the system's CAs."""
    if not settings.upstream_ca_bundle:
        return True
    try:
        return ssl.create_default_context(cafile=settings.upstream_ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"GATEWAY_UPSTREAM_CA_BUNDLE {settings.upstream_ca_bundle}: cannot be loaded ({exc})"
                         ) from None


def make_pool(settings: Settings, keepalive_s: float = 30.0) -> Http1Pool:
    tls = tls_context(settings)
    return Http1Pool(tls if isinstance(tls, ssl.SSLContext) else None, settings.upstream_max_connections,
                     settings.upstream_connect_timeout_s, keepalive_s)


class WorkerReply:
    """A worker's answer whose headers arrived (the ``UpstreamReply`` of this adapter)."""

    __slots__ = ("_resp", "content_type", "status")

    def __init__(self, resp: Response) -> None:
        self._resp = resp
        self.status = resp.status
        self.content_type = resp.content_type

    async def body(self, limit: int) -> bytes:
        declared = self._resp.content_length
        if declared is not None and declared > limit:
            raise errors.upstream_failed(f"the worker's response is larger than {limit} bytes")
        try:
            body = await self._resp.read(limit)
        except CONNECT_ERRORS as exc:
            raise errors.upstream_failed(f"connection lost ({exc.__class__.__name__})") from None
        if body is None:
            raise errors.upstream_failed(f"the worker's response is larger than {limit} bytes")
        return body

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp  # the response is its own iterator: no generator frame per chunk

    def close(self, complete: bool) -> None:
        if complete:
            self._resp.release()
        else:
            self._resp.abort()  # drop the connection: the worker sees the cancel


class OpenAIWorkers:
    """``Upstream`` for OpenAI-compatible workers."""

    def __init__(self, pool: Http1Pool, settings: Settings) -> None:
        self._pool = pool
        # Non-streaming: the whole answer is generated before the headers come; streams send them at once.
        self._total = settings.upstream_timeout_s
        self._read = settings.upstream_read_timeout_s
        self._forwarded = forwarded_header_names(settings)

    def request_headers(self, ex: Exchange, target: WorkerTarget) -> dict[str, str]:
        """The client's allowed headers, then the worker's own (its key wins), then ours."""
        client = ex.headers
        headers = {name: client[name] for name in self._forwarded if name in client}
        if "x-request-id" in client and "x-client-request-id" not in headers:
            headers["x-client-request-id"] = client["x-request-id"]  # ours names the request at the worker
        headers.update(target.headers)
        headers["Content-Type"] = "application/json"
        headers["x-request-id"] = ex.request_id
        return headers

    async def open(self, ex: Exchange, target: WorkerTarget) -> WorkerReply:
        headers = self.request_headers(ex, target)
        try:
            resp = await self._pool.post(target.url, ex.path, headers, ex.payload, read_timeout=self._read,
                                         total_timeout=None if ex.request.stream else self._total)
        except ConnectTimeout:
            raise Retryable("connect timeout") from None
        except ConnectFailed as exc:
            raise Retryable(f"could not connect ({exc})") from None
        except ReadTimeout:
            # Headers did not come in time: the worker is stuck (a non-stream request past its total).
            raise Retryable("no answer in time") from None
        except Disconnected as exc:
            # Often a pooled keep-alive connection the worker had closed: not a sign the worker is down.
            raise Retryable(f"connection dropped ({exc})", mark_failed=False) from None
        if resp.status in (401, 403):  # the worker refused our credentials: not the client's fault
            resp.abort()
            raise Misconfigured(f"the worker answered {resp.status} to the gateway's credentials")
        return WorkerReply(resp)
