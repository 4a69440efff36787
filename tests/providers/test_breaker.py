"""The provider circuit breaker's states (closed, open, half-open with one probe) and the retry budget."""

from __future__ import annotations

from gateway.upstream.provider_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, RetryBudget


def test_breaker_states_and_the_retry_budget() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=10)
    breaker.failure(now=0)
    assert breaker.state == CLOSED and breaker.allow(now=0)
    breaker.success()
    breaker.failure(now=1)
    breaker.failure(now=1)  # two in a row
    assert breaker.state == OPEN and not breaker.allow(now=5) and breaker.retry_after(now=5) == 6
    assert breaker.allow(now=11) and breaker.state == HALF_OPEN
    assert not breaker.allow(now=11)  # one probe at a time
    breaker.release()  # the probe said nothing (the client's bad request): another may go
    assert breaker.allow(now=11)
    breaker.failure(now=12)  # a failed probe opens it again at once
    assert breaker.state == OPEN and not breaker.allow(now=13) and breaker.opens == 2
    assert breaker.allow(now=23)
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow(now=23)

    budget = RetryBudget(ratio=0.5, reserve=2)
    assert budget.withdraw() and budget.withdraw() and not budget.withdraw()  # the reserve, then nothing
    budget.deposit()
    budget.deposit()  # two requests earn one retry
    assert budget.withdraw() and not budget.withdraw() and budget.exhausted == 2
