"""The Stripe test server served in-process by uvicorn on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn

from billing.stripe.sync import MeterNames
from billing.stripe.testserver import StripeTestServer

NAMES = MeterNames()


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningStripe:
    url: str
    server: StripeTestServer


@contextlib.asynccontextmanager
async def stripe_server(**kwargs: object) -> AsyncIterator[RunningStripe]:
    app = StripeTestServer([NAMES.input, NAMES.cached, NAMES.output], **kwargs)  # type: ignore[arg-type]
    server = _InLoopServer(uvicorn.Config(app, host="127.0.0.1", port=0, loop="none", log_level="warning",
                                          access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningStripe(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await task
