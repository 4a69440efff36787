"""One request's journey through the gateway, shared by every stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from gateway.pipeline.principal import Principal
from gateway.pipeline.request import ParsedRequest


class Target(Protocol):
    """Where a request is sent: a worker (routing.worker.Worker) or a hosted provider (upstream.provider)."""

    @property
    def id(self) -> str: ...

    @property
    def url(self) -> str: ...


@dataclass(slots=True)
class Exchange:
    request_id: str
    principal: Principal
    request: ParsedRequest
    path: str
    payload: bytes  # exactly what is sent to the worker
    headers: dict[str, str] = field(default_factory=dict)  # request headers the stages may read
    # The partner's end user: the ``x-end-user-id`` header, else the body's ``user`` field.
    end_user: str | None = None
    # The name the client asked for when it was an alias (request.model is then the served model).
    requested_model: str | None = None
    # The calling app, from the client's HTTP-Referer / X-Title headers (OpenRouter's convention).
    app: str | None = None
    # When the request arrived (perf_counter and wall clock): the endpoint passes its own, so that the
    # overhead, TTFT and duration figures include reading the body, the key's check and the parse.
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    worker: Target | None = None
    attempts: int = 0
    status: int = 0
    upstream_started_at: float | None = None  # when the body went to the (first) worker
    first_byte_at: float | None = None
    finished_at: float | None = None
    bytes_sent: int = 0
    # The whole answer went to the client: a disconnect now must not cancel the settling.
    responded: bool = False
    # "ok", "rejected", "upstream_error", "upstream_cut", "client_disconnected"
    outcome: str = "ok"
    # The worker's usage object, when it reported one; content_events counts streamed chunks.
    usage: dict[str, Any] | None = None
    content_events: int = 0
    # Of content_events, those carrying reasoning; the model the worker says served the request.
    reasoning_events: int = 0
    served_model: str | None = None
    # What the hosted provider that served the request charged for it (ticks), when it said or litellm knew.
    provider_cost_ticks: int | None = None
    # What the request costs the organisation at its plan (the usage record's billed ticks), set by the
    # metering stage when it settles; None when nothing was generated.
    billed_ticks: int | None = None
    # A whole (non-streamed) 200 answer, parsed, set before settling: what a stage may keep of it (the
    # Responses API's stored responses).
    answer: dict[str, Any] | None = None
    # Set once the post-request round trip ran (the Forwarder runs it before the last response byte).
    settled: bool = False
    # Set when the shared store was unreachable and local state answered instead.
    degraded: bool = False
    # Set when a settling that had to run locally is run again on the shared store (Forwarder.settle_later).
    resettling: bool = False
    # Response headers the stages add (rate-limit headers, ...).
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Per-stage scratch space, keyed by stage name.
    notes: dict[str, Any] = field(default_factory=dict)

    def set_fields(self, fields: dict[str, Any]) -> None:
        """Add top-level fields to the forwarded body.

        When none of them is in the client's body, they are spliced in before the closing brace (no
        re-encoding of a possibly large prompt); otherwise the body is re-encoded once.
        """
        body = self.request.body
        if any(name in body for name in fields):
            body.update(fields)
            self.payload = orjson.dumps(body)
            return
        body.update(fields)
        raw = self.payload
        extra = orjson.dumps(fields)[1:-1]
        end = len(raw)
        while end and raw[end - 1] in b" \t\r\n":
            end -= 1
        if end and raw[end - 1] == 0x7D and extra:  # "}": splice before it, copying the body once
            inner = end - 1
            while inner and raw[inner - 1] in b" \t\r\n":
                inner -= 1
            sep = b"" if inner and raw[inner - 1] == 0x7B else b","  # "{": an empty object
            self.payload = b"".join((memoryview(raw)[:inner], sep, extra, b"}"))
        else:
            self.payload = orjson.dumps(body)
