"""The back adapter for hosted providers: ``litellm.acompletion`` to any of the 100+ APIs litellm speaks.

litellm is imported on the first request that goes to a provider, in a worker thread (it takes seconds),
so neither start-up nor the GPU path ever pay for it; with ``LITELLM_LOCAL_MODEL_COST_MAP`` set and its
telemetry off it reaches nothing but the configured providers.

A provider's answer is handed on as an OpenAI-compatible reply like a worker's: a whole Chat Completions
body, or SSE chunks as they arrive (``data: {chunk}`` ... ``data: [DONE]``), so the relay, its SSE tap and
metering treat it exactly like a worker's. The reply names the model the client asked for (priced at our
price book) and carries the provider's usage (reasoning folded into ``completion_tokens`` as litellm does
for xAI); the provider's own cost goes to ``Exchange.provider_cost_ticks`` and never to the client.

Failures become ``ProviderFailure`` (a ``Retryable``: the forwarder moves on to the next provider) with
the class of error the client gets if no provider takes the request; a stream the provider cuts raises
``ProviderStreamCut`` from the chunk iterator, which the relay treats like a worker's dropped connection.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from types import ModuleType
from typing import Any

import orjson

from gateway import errors
from gateway.pipeline.contract import Retryable
from gateway.pipeline.exchange import Exchange
from gateway.upstream.fleet_config import ProviderSpec
from gateway.upstream.http1 import Disconnected
from gateway.upstream.provider_breaker import CircuitBreaker

log = logging.getLogger("gateway.providers")

TICKS_PER_USD = 10**10
# Failure kinds (a known set: they label /metrics).
KINDS = ("timeout", "connect", "auth", "rate_limited", "unavailable", "server_error", "bad_request", "bad_response",
         "circuit_open", "cut")
# ex.notes: (provider label, "fallback" | "overflow") of a request that went to a provider.
PROVIDER_NOTE = "provider"
# Fields of the client's body litellm gets from us, not from the body.
_OWN = frozenset({"model", "stream", "stream_options"})
# litellm's own loggers. They have no level of their own, so under the gateway's root logger (INFO) every
# call wrote an INFO line ("LiteLLM completion() model= ...") through litellm's secret-redacting filters:
# about 0.1 ms of CPU a request, and a line per request in the gateway's log.
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


class ProviderFailure(Retryable):
    """A provider could not take the request (nothing reached the client). ``kind`` is one of ``KINDS``."""

    def __init__(self, reason: str, kind: str, retry_after: float | None = None) -> None:
        super().__init__(reason, mark_failed=False)
        self.kind = kind
        self.retry_after = retry_after


class ProviderStreamCut(Disconnected):
    """The provider's stream ended early: the relay ends the client's stream with an error event."""


class ProviderHealth:
    """One provider's breaker and counters, shared by every model that lists it (keyed by its label)."""

    __slots__ = ("breaker", "errors", "label", "requests")

    def __init__(self, label: str, breaker: CircuitBreaker) -> None:
        self.label = label
        self.breaker = breaker
        self.requests: dict[tuple[str, str], int] = {}  # (reason, result) -> count
        self.errors: dict[str, int] = {}  # kind -> count

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def count_request(self, reason: str, result: str) -> None:
        key = (reason, result)
        self.requests[key] = self.requests.get(key, 0) + 1


class ProviderTarget:
    """One provider of one model's fallback list (a ``Target``)."""

    __slots__ = ("health", "id", "label", "model", "spec", "url")

    def __init__(self, model: str, spec: ProviderSpec, health: ProviderHealth) -> None:
        self.model = model  # our served model name: what the reply names and what is priced
        self.spec = spec
        self.label = health.label  # a /metrics label: from the config, a known set
        self.id = "provider:" + spec.model
        self.url = spec.api_base or spec.model
        self.health = health


class ProviderReply:
    """A provider's answer that started (the ``UpstreamReply`` of this adapter)."""

    __slots__ = ("_body", "_ex", "_failures", "_model", "_stream", "content_type", "status")

    def __init__(self, ex: Exchange, model: str, failures: tuple[type[BaseException], ...],
                 body: bytes | None = None, stream: Any = None) -> None:
        self._ex = ex
        self._model = model
        self._failures = failures
        self._body = body
        self._stream = stream
        self.status = 200
        self.content_type = "text/event-stream" if stream is not None else "application/json"

    async def body(self, limit: int) -> bytes:
        body = self._body or b""
        if len(body) > limit:
            raise errors.upstream_failed(f"the provider's response is larger than {limit} bytes")
        return body

    def chunks(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        ex, model = self._ex, self._model
        try:
            async for chunk in self._stream:
                event = _chunk_dict(chunk, model)
                usage = event.get("usage")
                if usage is not None:
                    ex.provider_cost_ticks = _cost_ticks(getattr(chunk, "usage", None), None)
                yield b"data: " + orjson.dumps(event) + b"\n\n"
        except self._failures as exc:
            raise ProviderStreamCut(f"the provider's stream failed ({exc.__class__.__name__})") from None
        yield b"data: [DONE]\n\n"

    def close(self, complete: bool) -> None:
        if self._stream is not None and not complete:
            self._stream.close()  # drops the provider's connection: it sees the cancel


class HostedProviders:
    """``Upstream`` for hosted providers, through litellm (imported on first use)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._lib: ModuleType | None = None
        self._loading: asyncio.Future[ModuleType] | None = None
        self._failures: tuple[type[BaseException], ...] = ()
        self.import_seconds: float | None = None

    async def litellm(self) -> ModuleType:
        """litellm, imported once in a worker thread (every request waiting on it shares the import)."""
        if self._lib is not None:
            return self._lib
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(self._import))
        lib = await asyncio.shield(self._loading)
        if self._lib is None:
            # litellm's modules and tables live as long as the process: out of the cyclic collector's sight,
            # as the lifespan does for the runtime (else every full collection traverses them).
            gc.freeze()
        self._lib = lib
        return lib

    def _import(self) -> ModuleType:
        import time

        started = time.perf_counter()
        # Nothing leaves the machine but the requests to the configured providers.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_TELEMETRY", "False")
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        import aiohttp  # litellm's transport: its errors may surface as they are
        import httpx
        import litellm
        import openai

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        level = logging.getLevelName(os.environ["LITELLM_LOG"].upper())  # an int for a known level name
        for name in LITELLM_LOGGERS:
            logging.getLogger(name).setLevel(level if isinstance(level, int) else logging.ERROR)
        # Not turn_off_message_logging: no logging callback is registered, and its redaction deep-copies every
        # call's logging payload (about 3 ms of CPU a request).
        litellm.drop_params = True
        self._failures = (openai.OpenAIError, httpx.HTTPError, aiohttp.ClientError, TimeoutError, OSError)
        self.import_seconds = time.perf_counter() - started
        log.info("litellm %s imported for hosted providers in %.2f s", getattr(litellm, "__version__", "?"),
                 self.import_seconds)
        return litellm

    async def open(self, ex: Exchange, target: ProviderTarget) -> ProviderReply:
        lib = await self.litellm()
        spec = target.spec
        body = ex.request.body
        kwargs: dict[str, Any] = {k: v for k, v in body.items() if k not in _OWN}
        kwargs.update(model=spec.model, num_retries=0, max_retries=0, timeout=self._timeout,
                      extra_headers={"x-request-id": ex.request_id})
        if spec.api_key is not None:
            kwargs["api_key"] = spec.api_key
        if spec.api_base is not None:
            kwargs["api_base"] = spec.api_base
        kwargs.update(spec.extra)
        if ex.request.stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}  # metered always; the SSE tap drops it if unasked
        try:
            response = await lib.acompletion(**kwargs)
        except self._failures as exc:
            raise classify(lib, exc, target) from None
        except (ValueError, TypeError, KeyError) as exc:  # litellm refusing the request before sending it
            raise errors.invalid_request(f"The hosted provider cannot take this request: {str(exc)[:300]}") from None
        if ex.request.stream:
            return ProviderReply(ex, target.model, self._failures, stream=response)
        answer = _answer_dict(response, target.model)
        ex.provider_cost_ticks = _cost_ticks(getattr(response, "usage", None),
                                             getattr(response, "_hidden_params", None))
        return ProviderReply(ex, target.model, self._failures, body=orjson.dumps(answer))


def classify(lib: ModuleType, exc: BaseException, target: ProviderTarget) -> BaseException:
    """The ``ProviderFailure`` (or, for the client's own mistake, the 400) of a failed provider call."""
    import aiohttp  # litellm's transport, loaded with it (the server never imports it otherwise)

    status = getattr(exc, "status_code", None)
    detail = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
    name = target.label
    if isinstance(exc, lib.Timeout | TimeoutError):
        return ProviderFailure(f"{name}: no answer in time", "timeout")
    if isinstance(exc, lib.BadRequestError) and not isinstance(exc, lib.NotFoundError):
        return errors.invalid_request(f"The hosted provider refused the request: {_provider_message(detail)}")
    if isinstance(exc, lib.AuthenticationError | lib.PermissionDeniedError) or status in (401, 403):
        log.error("hosted provider %s refuses our credentials (%s): check its api_key", name, status)
        return ProviderFailure(f"{name}: refused the gateway's credentials", "auth")
    if isinstance(exc, lib.RateLimitError) or status == 429:
        return ProviderFailure(f"{name}: rate limited", "rate_limited", _retry_after(exc))
    if isinstance(exc, lib.ServiceUnavailableError) or status == 503:
        return ProviderFailure(f"{name}: unavailable", "unavailable", _retry_after(exc))
    if isinstance(exc, lib.APIConnectionError | aiohttp.ClientConnectionError | OSError) or "connect" in detail.lower():
        return ProviderFailure(f"{name}: could not connect", "connect")
    if isinstance(status, int) and status < 500:
        return ProviderFailure(f"{name}: answered {status}", "bad_response")
    return ProviderFailure(f"{name}: failed ({status or exc.__class__.__name__})", "server_error")


def failure_kind(failure: Retryable) -> str:
    """The kind (one of ``KINDS``) of a failed provider try: the adapter's own, or the relay's before the
    first chunk of a stream (none in time, or the stream failed)."""
    if isinstance(failure, ProviderFailure):
        return failure.kind
    return "timeout" if failure.reason.startswith("no first byte") else "cut"


def final_error(failure: Retryable | None) -> errors.GatewayError:
    """What the client gets when no provider took the request, in the class of the last failure."""
    if failure is None:
        return errors.provider_failed("connect", "no provider could be tried")
    if isinstance(failure, ProviderFailure):
        return errors.provider_failed(failure.kind, failure.reason, failure.retry_after)
    return errors.provider_failed(failure_kind(failure), failure.reason)


def _provider_message(detail: str) -> str:
    return detail.split(" - ", 1)[-1][:300]


def _retry_after(exc: BaseException) -> float | None:
    for holder in (getattr(exc, "litellm_response_headers", None),
                   getattr(getattr(exc, "response", None), "headers", None)):
        if holder is None:
            continue
        try:
            value = holder.get("retry-after")
        except AttributeError:
            continue
        if value is not None:
            try:
                return max(float(value), 0.0)
            except ValueError:
                return None
    return None


def _cost_ticks(usage: Any, hidden: Mapping[str, Any] | None) -> int | None:
    """The provider's own cost of the request in ticks: its ``cost_in_usd_ticks`` exactly (xAI), else the
    cost litellm restated from it or priced itself, through its shortest decimal form (never float maths)."""
    ticks = getattr(usage, "cost_in_usd_ticks", None) if usage is not None else None
    if isinstance(ticks, int) and not isinstance(ticks, bool) and ticks >= 0:
        return ticks
    for cost in (getattr(usage, "cost", None) if usage is not None else None,
                 hidden.get("response_cost") if hidden else None):
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
            return int((Decimal(repr(cost)) * TICKS_PER_USD).to_integral_value())
    return None


def _usage_dict(usage: Any) -> dict[str, Any] | None:
    if usage is None:
        return None
    out: dict[str, Any] = {"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                           "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
                           "total_tokens": getattr(usage, "total_tokens", 0) or 0}
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(prompt_details, "cached_tokens", None) if prompt_details is not None else None
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    completion_details = getattr(usage, "completion_tokens_details", None)
    reasoning = getattr(completion_details, "reasoning_tokens", None) if completion_details is not None else None
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def _message_fields(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": getattr(message, "role", None) or "assistant",
                           "content": getattr(message, "content", None)}
    reasoning = getattr(message, "reasoning_content", None)
    if reasoning:
        out["reasoning_content"] = reasoning
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = [c.model_dump(exclude_none=True) if hasattr(c, "model_dump") else c for c in tool_calls]
    return out


def _answer_dict(response: Any, model: str) -> dict[str, Any]:
    choices = [{"index": getattr(c, "index", i), "message": _message_fields(c.message),
                "finish_reason": getattr(c, "finish_reason", None) or "stop"}
               for i, c in enumerate(getattr(response, "choices", None) or ())]
    out: dict[str, Any] = {"id": getattr(response, "id", None) or "chatcmpl-provider", "object": "chat.completion",
                           "created": getattr(response, "created", 0), "model": model, "choices": choices}
    usage = _usage_dict(getattr(response, "usage", None))
    if usage is not None:
        out["usage"] = usage
    return out


def _chunk_dict(chunk: Any, model: str) -> dict[str, Any]:
    choices = []
    usage = _usage_dict(getattr(chunk, "usage", None))
    for i, c in enumerate(getattr(chunk, "choices", None) or ()):
        delta = getattr(c, "delta", None)
        fields: dict[str, Any] = {}
        if delta is not None:
            role = getattr(delta, "role", None)
            if role:
                fields["role"] = role
            content = getattr(delta, "content", None)
            if content is not None:
                fields["content"] = content
            reasoning = getattr(delta, "reasoning_content", None)
            if reasoning:
                fields["reasoning_content"] = reasoning
            tool_calls = getattr(delta, "tool_calls", None)
            if tool_calls:
                fields["tool_calls"] = [t.model_dump(exclude_none=True) if hasattr(t, "model_dump") else t
                                        for t in tool_calls]
        choices.append({"index": getattr(c, "index", i), "delta": fields,
                        "finish_reason": getattr(c, "finish_reason", None)})
    if usage is not None and not any(c["delta"] or c["finish_reason"] for c in choices):
        choices = []  # the usage-only chunk, as OpenAI sends it (litellm adds an empty choice)
    out: dict[str, Any] = {"id": getattr(chunk, "id", None) or "chatcmpl-provider", "object": "chat.completion.chunk",
                           "created": getattr(chunk, "created", 0), "model": model, "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out
