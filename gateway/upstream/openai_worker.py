"""The back adapter for OpenAI-compatible workers (vLLM, SGLang): one pooled aiohttp session for all
of them, built in the app's lifespan.

``OpenAIWorkers.open`` posts the forwarded body and returns once the worker's response headers
arrived. Failures that another worker may not share (it could not be reached, it dropped the
connection, it did not answer in time) are ``Retryable``; the forwarder decides whether to try again.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp

from gateway import errors
from gateway.config import Settings
from gateway.pipeline.contract import Misconfigured, Retryable
from gateway.pipeline.exchange import Exchange

# What counts as "the connection failed" while a body is read: the answer is cut.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)


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


def make_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        ssl=tls_context(settings),
        limit=settings.upstream_max_connections,
        limit_per_host=0,
        ttl_dns_cache=300,
        keepalive_timeout=30,
        enable_cleanup_closed=True,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.upstream_connect_timeout_s,
        sock_read=settings.upstream_read_timeout_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


class WorkerReply:
    """A worker's answer whose headers arrived (the ``UpstreamReply`` of this adapter)."""

    __slots__ = ("_resp", "content_type", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.content_type = resp.headers.get("Content-Type", "application/json")

    async def body(self, limit: int) -> bytes:
        declared = self._resp.content_length
        if declared is not None and declared > limit:
            raise errors.upstream_failed(f"the worker's response is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in self._resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise errors.upstream_failed(f"the worker's response is larger than {limit} bytes")
                chunks.append(chunk)
        except CONNECT_ERRORS as exc:
            raise errors.upstream_failed(f"connection lost ({exc.__class__.__name__})") from None
        return b"".join(chunks)

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()  # aiohttp's own iterator: no generator frame per chunk

    def close(self, complete: bool) -> None:
        if complete:
            self._resp.release()
        else:
            self._resp.close()  # drop the connection: the worker sees the cancel


class OpenAIWorkers:
    """``Upstream`` for OpenAI-compatible workers."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        # Non-streaming: the whole answer is generated before the headers come; streams send them at once.
        self._whole_timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout_s,
                                                    connect=settings.upstream_connect_timeout_s,
                                                    sock_read=settings.upstream_read_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, connect=settings.upstream_connect_timeout_s,
                                                     sock_read=settings.upstream_read_timeout_s)
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
        timeout = self._stream_timeout if ex.request.stream else self._whole_timeout
        try:
            resp = await self._session.post(target.url + ex.path, data=ex.payload, headers=headers, timeout=timeout)
        except aiohttp.ConnectionTimeoutError:
            raise Retryable("connect timeout") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            # Headers did not come in time: the worker is stuck (a non-stream request past its total).
            raise Retryable("no answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise Retryable(f"could not connect ({exc.__class__.__name__})") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # Often a pooled keep-alive connection the worker had closed: not a sign the worker is down.
            raise Retryable(f"connection dropped ({exc.__class__.__name__})", mark_failed=False) from None
        except CONNECT_ERRORS as exc:
            raise Retryable(f"could not connect ({exc.__class__.__name__})") from None
        if resp.status in (401, 403):  # the worker refused our credentials: not the client's fault
            resp.close()
            raise Misconfigured(f"the worker answered {resp.status} to the gateway's credentials")
        return WorkerReply(resp)
