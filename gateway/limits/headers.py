"""OpenAI's rate-limit response headers and the wording of a 429."""

from __future__ import annotations

import math


def duration(ms: int) -> str:
    """A duration the way OpenAI (Go's ``time.Duration``) writes it: ``12ms``, ``1s``, ``1.5s``, ``6m0s``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


_NAMES = {kind: (f"x-ratelimit-limit-{kind}".encode(), f"x-ratelimit-remaining-{kind}".encode(),
                 f"x-ratelimit-reset-{kind}".encode()) for kind in ("requests", "tokens")}


def limit_headers(requests: tuple[int, int, int] | None,
                  tokens: tuple[int, int, int] | None) -> list[tuple[bytes, bytes]]:
    """The six ``x-ratelimit-*`` headers from (limit, remaining, reset_ms) of the binding request and token
    limits; a kind with no limit gets no headers."""
    out: list[tuple[bytes, bytes]] = []
    for kind, values in (("requests", requests), ("tokens", tokens)):
        if values is None:
            continue
        limit_name, remaining_name, reset_name = _NAMES[kind]
        limit, remaining, reset_ms = values
        out += ((limit_name, b"%d" % limit), (remaining_name, b"%d" % remaining),
                (reset_name, duration(reset_ms).encode()))
    return out


def retry_headers(retry_ms: int) -> dict[str, str]:
    """``retry-after`` in whole seconds (HTTP) and ``retry-after-ms`` (read by the OpenAI SDKs)."""
    return {"retry-after": str(max(1, math.ceil(retry_ms / 1000))), "retry-after-ms": str(max(retry_ms, 1))}
