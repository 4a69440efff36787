"""The usage record of one request, and how it is read from a worker's usage object.

Rules (docs/billing.md): cached tokens are clamped to the prompt; reasoning tokens are
billed as output exactly once, whether the worker counted them inside ``completion_tokens``
(OpenAI, vLLM: total = prompt + completion) or outside (xAI: total = prompt + completion +
reasoning). When the usage object never arrived, the gateway counts what it saw and marks the
record as counted rather than reported.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from billing.money import Tokens

# No request has more tokens than this in any field: a usage object claiming more is not believed.
MAX_REQUEST_TOKENS = 100_000_000
# The ledger's column limits, checked before a record enters the usage stream.
_TEXT_LIMITS = {"request_id": 64, "org_id": 40, "key_id": 40, "end_user": 200, "model": 200, "requested_model": 200,
                "app": 200,
                "worker": 200, "plan": 100, "status": 32}
_INT64 = (1 << 63) - 1
_INT32 = (1 << 31) - 1


class InvalidUsage(ValueError):
    """A worker's usage object with a count no request can have (above ``MAX_REQUEST_TOKENS``)."""


def _int(value: Any) -> int:
    """A count; what is not a positive integer counts 0, as a missing field does. A float is not
    believed: JSON parsers turn integers beyond 64 bits into floats."""
    if isinstance(value, float) and value > 0:
        raise InvalidUsage(f"a token count is not an integer: {str(value)[:40]}")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return 0
    if value > MAX_REQUEST_TOKENS:
        raise InvalidUsage(f"a token count is out of range: {str(value)[:40]}")
    return value


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or (value is not None and isinstance(value, Mapping))  # ABC checks cost ~0.2 us


def tokens_from_usage(usage: Mapping[str, Any]) -> Tokens:
    """Billable tokens from an OpenAI-style usage object (missing or odd fields count 0); raises
    ``InvalidUsage`` for counts no request can have, so that they are never billed as reported."""
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if _is_mapping(prompt_details) else 0
    completion_details = usage.get("completion_tokens_details")
    reasoning = _int(completion_details.get("reasoning_tokens")) if _is_mapping(completion_details) else 0
    total = _int(usage.get("total_tokens"))
    # xAI reports reasoning outside completion_tokens: total = prompt + completion + reasoning.
    if reasoning and total == prompt + completion + reasoning:
        outside = True
    elif total == prompt + completion:
        outside = False
    else:  # no usable total: reasoning cannot be inside a smaller completion count
        outside = reasoning > completion
    output = completion + reasoning if outside else completion
    return Tokens(prompt, min(cached, prompt), output, reasoning)


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A cheap prompt-size estimate (4 characters a token, a few tokens per message) for requests
    whose usage never arrived and for budget reservations."""
    chars = 0
    overhead = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            overhead += 4
            if not isinstance(message, Mapping):
                continue
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                        chars += len(part["text"])
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    elif isinstance(prompt, list):
        for item in prompt:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, int):
                overhead += 1
            elif isinstance(item, list):
                overhead += len(item)
    return overhead + (chars + 3) // 4


@dataclass(slots=True)  # not frozen: built on the request path, and frozen init costs ~2 us a field
class UsageRecord:
    """One ledger row: who, what served it, the tokens, the money, the timing and how it ended."""

    request_id: str
    org_id: str
    key_id: str
    model: str  # the model that served the request (priced)
    requested_model: str
    worker: str
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int  # reasoning included once
    reasoning_tokens: int
    list_ticks: int
    billed_ticks: int
    plan: str
    started_at_ms: int  # Unix milliseconds: the plan valid at this moment was applied
    ttfb_ms: int
    duration_ms: int
    status: str  # ok, upstream_cut, client_disconnected, upstream_error; rate_limited (kind "refused")
    http_status: int
    reported: bool  # False: the worker's usage never arrived and the tokens were counted
    stream: bool
    end_user: str | None = None
    # "usage": a ledger row (billed); "refused": a request refused with 429 by a rate limit or spend cap,
    # counted in the hourly rollups only (nothing generated, nothing billed, no ledger row).
    kind: str = "usage"
    # The calling app: the client's X-Title, else its HTTP-Referer (OpenRouter's convention); None: not named.
    app: str | None = None
    # What the hosted provider that served it charged (ticks; None: our fleet, or unknown).
    provider_cost_ticks: int | None = None

    def encode(self) -> bytes:
        try:
            return orjson.dumps(self)  # orjson serialises dataclasses natively (fast, no asdict copy)
        except TypeError:  # an integer beyond 64 bits: kept as it is, for the dead letters to show
            return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> UsageRecord:
        values = orjson.loads(raw)
        if type(values) is dict and tuple(values) == _FIELD_NAMES:  # as encode writes it: by position (~5x faster)
            return cls(*values.values())
        return cls(**values)  # another order, or older fields (a record from before a column was added)

    def problems(self) -> list[str]:
        """Why the ledger could never store this record (empty when it can): each text within its
        column, each number a non-negative integer within its column."""
        found: list[str] = []
        for name, limit in _TEXT_LIMITS.items():
            value = getattr(self, name)
            if value is None and name in ("end_user", "app"):
                continue
            if not isinstance(value, str) or len(value) > limit or "\x00" in value:
                found.append(f"{name}: not a text of at most {limit} characters")
        for name in ("prompt_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "list_ticks",
                     "billed_ticks", "started_at_ms", "ttfb_ms", "duration_ms", "http_status"):
            value = getattr(self, name)
            bound = _INT32 if name in ("ttfb_ms", "duration_ms", "http_status") else _INT64
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= bound:
                found.append(f"{name}: {str(value)[:40]} is not an integer in [0, {bound}]")
        cost = self.provider_cost_ticks
        if cost is not None and (not isinstance(cost, int) or isinstance(cost, bool) or not 0 <= cost <= _INT64):
            found.append(f"provider_cost_ticks: {str(cost)[:40]} is not an integer in [0, {_INT64}]")
        return found

    @property
    def refused(self) -> bool:
        return self.kind == "refused"

    @property
    def decode_ms(self) -> int:
        """The time over which the output was generated, for output tokens per second (0: not counted)."""
        if self.status != "ok" or self.output_tokens <= 0:
            return 0
        return max(self.duration_ms - self.ttfb_ms if self.stream else self.duration_ms, 0)

    @property
    def tokens(self) -> Tokens:
        return Tokens(self.prompt_tokens, self.cached_tokens, self.output_tokens, self.reasoning_tokens)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(UsageRecord))
