"""Background tasks that never die silently: one periodic-task helper and one backoff, for every
task the lifespan starts (health checks, worker sync, plan refresh, the Stripe sync, the ledger loops).

A background task is the one place where any exception is caught: it is logged with its traceback,
counted, and the task goes on after a pause. Cancellation and a set ``stop`` event end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("gateway.background")


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless stopping; returns False once ``stop`` is set."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return not stop.is_set()


@dataclass
class Backoff:
    """Exponential pauses after consecutive failures: first, 2x first, ... up to most."""

    first: float = 0.5
    most: float = 30.0
    _next: float = field(default=0.0, init=False)

    def failed(self) -> float:
        self._next = self.first if self._next == 0 else min(self.most, self._next * 2)
        return self._next

    def reset(self) -> None:
        self._next = 0.0


@dataclass
class TaskFailures:
    """Failures of each background job, by name (exported as gateway_background_failures_total).

    ``expected``: the errors of an outage (a database or Redis away), logged as one line without a
    traceback; anything else is logged with its traceback."""

    counts: dict[str, int] = field(default_factory=dict)
    expected: tuple[type[BaseException], ...] = ()

    def add(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


async def every(interval: float, name: str, step: Callable[[], Awaitable[object]], stop: asyncio.Event,
                failures: TaskFailures, first_after: float = 0.0) -> None:
    """Run ``step`` after ``first_after`` seconds (now by default) and then every ``interval`` seconds until
    ``stop``; a failure is logged, counted and retried at the next tick."""
    if not await pause(stop, first_after):
        return
    while not stop.is_set():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the one catch-all of a background job: logged, counted, retried
            failures.add(name)
            if isinstance(exc, failures.expected):
                log.warning("background job %s: %s: %s; retrying in %.1fs", name, exc.__class__.__name__,
                            str(exc)[:200], interval)
            else:
                log.exception("background job %s failed; retrying in %.1fs", name, interval)
        if not await pause(stop, interval):
            return
