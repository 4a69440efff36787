"""The workers' health checks and metrics scrapes over the lean HTTP/1.1 client (the ``Probe`` of the
contract): ``GET`` with the worker's own headers, a deadline for the whole answer, the body read whole up
to a limit. Its connections are a pool of their own, so that a slow check never holds a connection the
request path is waiting for. They are kept alive between checks for at most 4 s, under the 5 s after which
vLLM's server (uvicorn's default) closes an idle one: a check never goes out on a connection the worker is
closing at that moment, which would fail it and take a healthy worker out of rotation until the next one.

It replaced an aiohttp session, which was the only reason the server imported aiohttp: 0.04-0.11 s of CPU
of a cold start, and 5-8 MiB of RSS (``docs/benchmarks.md``, "Start-up").
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from gateway.config import Settings
from gateway.pipeline.contract import ProbeFailed
from gateway.upstream.http1 import Http1Pool, HttpError
from gateway.upstream.openai_worker import make_pool

KEEPALIVE_S = 4.0


class WorkerProbe:
    def __init__(self, http: Http1Pool) -> None:
        self._http = http

    @classmethod
    def build(cls, settings: Settings) -> WorkerProbe:
        """Verified like the request path's connections (``GATEWAY_UPSTREAM_CA_BUNDLE``), a pool of its own."""
        return cls(make_pool(settings, keepalive_s=KEEPALIVE_S))

    async def get(self, url: str, path: str, headers: Mapping[str, str], timeout_s: float, limit: int
                  ) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(timeout_s):  # the connect too: the pool's own timeout may be longer
                resp = await self._http.get(url, path, headers, read_timeout=timeout_s, total_timeout=timeout_s)
                try:
                    body = await resp.read(limit)
                except BaseException:
                    resp.abort()
                    raise
        except HttpError as exc:
            raise ProbeFailed(f"{path}: {exc.__class__.__name__}") from None
        except TimeoutError:
            raise ProbeFailed(f"{path}: no answer within {timeout_s:g} s") from None
        if body is None:
            resp.abort()
            raise ProbeFailed(f"{path}: an answer over {limit} bytes")
        resp.release()
        return resp.status, body

    def close(self) -> None:
        self._http.close()

    async def __aenter__(self) -> WorkerProbe:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["WorkerProbe"]
