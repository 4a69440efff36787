"""The scheduler and the timing model.

At most ``max_running`` sequences run; the others wait in a FIFO queue. A request's prefill takes
``prefill_overhead_s`` + uncached tokens / ``prefill_tokens_per_s``; prefills share the worker's compute, so
concurrent ones are served one after another (a worker busy prefilling long uncached prompts answers
everyone later, which is what cache-aware routing avoids). Each output token after the first takes
1 / ``decode_tokens_per_s``. Every duration is multiplied by ``time_scale``; with 0 nothing sleeps and a
request yields to the event loop once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from workersim.sim_settings import SimConfig


class Engine:
    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._prefill_free_at = 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def sleeps(self) -> bool:
        return self._config.time_scale > 0

    # -- admission -------------------------------------------------------------------------------------
    async def acquire(self) -> None:
        """Take a running slot, waiting in FIFO order when all ``max_running`` are taken."""
        if self.running < self._config.max_running and not self._waiters:
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just before the cancel
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give the slot back, or hand it straight to the first waiter."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.running -= 1

    # -- timing ----------------------------------------------------------------------------------------
    async def prefill(self, uncached_tokens: int) -> None:
        """Sleep until this request's first token: its turn of the prefill compute, then its prefill."""
        cfg = self._config
        scale = cfg.time_scale
        if scale <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        work = (cfg.prefill_overhead_s + uncached_tokens / cfg.prefill_tokens_per_s) * scale
        start = max(now, self._prefill_free_at)
        end = start + work
        self._prefill_free_at = end
        delay = end - now + cfg.slow_start_s * scale
        if delay <= 0:
            return
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if self._prefill_free_at == end:  # nobody queued behind us: give back the unused compute
                self._prefill_free_at = max(start, min(end, loop.time()))
            raise

    def token_interval(self) -> float:
        """Seconds between two output tokens of one sequence now (0 when not sleeping)."""
        cfg = self._config
        interval = cfg.time_scale / cfg.decode_tokens_per_s
        if cfg.itl_load_factor:
            interval *= 1.0 + cfg.itl_load_factor * self.running / cfg.max_running
        return interval
