"""The steps every request passes through, around the upstream call, as protocols.

A *stage* (rate limits, spend caps, metering...) queues its shared-state operations in the request's
single pre-request round trip, may refuse the request once the results are in, may add fields to what
is sent to the worker (``Exchange.set_fields``), and queues its settling in the one post-request round
trip. The *router* queues its lookups in the same pre-request round trip, picks the target, and
records its choice in the post-request round trip. An *upstream* (a back adapter) sends the request to
the chosen target and hands back its answer. A *probe* is the upstreams' transport off the request path:
the worker pool's health checks and metrics scrapes go through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any, Protocol, TypeVar

from gateway.pipeline.exchange import Exchange, Target
from gateway.state.base import RoundTrip

T = TypeVar("T", bound=Target)
T_contra = TypeVar("T_contra", bound=Target, contravariant=True)


class Stage(Protocol):
    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue this stage's pre-request state operations (no I/O here)."""

    def observe(self, ex: Exchange, results: list[Any]) -> None:
        """Note what this stage's operations reserved, before any stage may refuse the request: every
        stage is settled (``finish``), also one after the stage that refused."""

    def admit(self, ex: Exchange, results: list[Any]) -> None:
        """Read the round trip's results; raise ``GatewayError`` to refuse the request."""

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue the settling operations after the request ended, whatever happened (also after a
        refusal by this or another stage). Every stage's and the router's settling runs in one round trip."""


class Router(Protocol[T]):
    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue the lookups the choice needs."""

    def observe(self, ex: Exchange, results: list[Any]) -> None:
        """Read the round trip's results before any stage may refuse the request (what was reserved)."""

    def choose(self, ex: Exchange, results: list[Any], candidates: list[T], exclude: Collection[str]) -> T | None:
        """Pick a target among healthy ``candidates`` not in ``exclude``."""

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        """Queue the recording of where the request went and what the worker reported; also called for a
        request that never reached a worker (refused by a stage), to release what ``plan`` reserved."""

    def settled(self, ex: Exchange, results: list[Any]) -> None:
        """Read the post-request round trip's results (counters); no I/O."""


class Retryable(Exception):
    """The target could not take the request and nothing reached the client: another target may.

    ``mark_failed`` says whether the target should leave rotation until its next good health check."""

    def __init__(self, reason: str, mark_failed: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mark_failed = mark_failed


class Misconfigured(Retryable):
    """The target refused the gateway's credentials (401/403): its configuration is wrong, it is not down.
    It leaves rotation as *misconfigured*; another target may take the request."""


class UpstreamReply(Protocol):
    """An answer that has started to arrive: a status, then either the whole body or its chunks."""

    status: int
    content_type: str

    async def body(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (``GatewayError`` 502 beyond it)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (streams)."""
        ...

    def close(self, complete: bool) -> None:
        """Give the connection back (``complete``) or drop it, which cancels the request upstream."""


class Upstream(Protocol[T_contra]):
    """A back adapter: one kind of upstream (an OpenAI-compatible worker; later a hosted provider)."""

    async def open(self, ex: Exchange, target: T_contra) -> UpstreamReply:
        """Send ``ex.payload`` to ``target``; raise ``Retryable`` when another target may take it, or
        ``GatewayError`` when no retry can help."""
        ...


class ProbeFailed(Exception):
    """A probe got no whole answer: no connection, a timeout, a cut or malformed answer, or one too large."""


class Probe(Protocol):
    """``GET`` a target's URL off the request path (health, models, metrics)."""

    async def get(self, url: str, path: str, headers: Mapping[str, str], timeout_s: float, limit: int
                  ) -> tuple[int, bytes]:
        """The status and the whole body (at most ``limit`` bytes) within ``timeout_s``, or ``ProbeFailed``."""
        ...


__all__ = ["Exchange", "Misconfigured", "Probe", "ProbeFailed", "Retryable", "Router", "Stage", "Target", "Upstream",
           "UpstreamReply"]
