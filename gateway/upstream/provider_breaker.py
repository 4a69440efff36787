"""Keeping a failing hosted provider out of the way: a circuit breaker per provider and one retry budget.

*Breaker.* ``failures`` consecutive failures open the circuit: the provider is skipped for ``cooldown_s``.
Then it is half-open: one request (the probe) goes through; its success closes the circuit, its failure
opens it again for another cooldown. A request that ends without a verdict (the client's own bad
request) gives the probe back.

*Retry budget.* Moving on to the next provider after a failure is a retry; retries may be at most
``ratio`` of provider requests, plus a reserve of ``reserve`` (a token bucket: each request adds
``ratio``, each retry takes one, never more than ``reserve`` saved), so an outage of every provider
does not multiply the load on them.

Per replica and in process (no shared state): each replica learns of a failing provider on its own
within a few requests.
"""

from __future__ import annotations

import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    __slots__ = ("_cooldown", "_threshold", "failures", "opened_at", "opens", "probing", "state")

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self._threshold = failures
        self._cooldown = cooldown_s
        self.state = CLOSED
        self.failures = 0  # consecutive
        self.opened_at = 0.0
        self.probing = False
        self.opens = 0  # times the circuit opened (a counter for /metrics)

    def allow(self, now: float | None = None) -> bool:
        """May a request go to this provider now? In half-open state, only one (the probe) at a time."""
        if self.state == CLOSED:
            return True
        now = time.monotonic() if now is None else now
        if self.state == OPEN:
            if now < self.opened_at + self._cooldown:
                return False
            self.state = HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def retry_after(self, now: float | None = None) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(self.opened_at + self._cooldown - now, 0.0)

    def success(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self.probing = False

    def failure(self, now: float | None = None) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self._threshold:
            if self.state != OPEN:
                self.opens += 1
            self.state = OPEN
            self.opened_at = time.monotonic() if now is None else now
        self.probing = False

    def release(self) -> None:
        """A request that says nothing about the provider's health (e.g. the client's bad request)."""
        self.probing = False


class RetryBudget:
    __slots__ = ("_ratio", "_reserve", "exhausted", "tokens")

    def __init__(self, ratio: float, reserve: float = 10.0) -> None:
        self._ratio = ratio
        self._reserve = reserve
        self.tokens = reserve
        self.exhausted = 0  # retries refused (a counter for /metrics)

    def deposit(self) -> None:
        """One request went to the providers."""
        self.tokens = min(self._reserve, self.tokens + self._ratio)

    def withdraw(self) -> bool:
        """May this failed request try the next provider?"""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.exhausted += 1
        return False
