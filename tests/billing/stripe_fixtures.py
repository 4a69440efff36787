"""The Stripe test server served in-process by uvicorn on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from billing.stripe.sync import MeterNames
from stripefake import StripeTestServer
from tests.conftest import served

NAMES = MeterNames()


@dataclass
class RunningStripe:
    url: str
    server: StripeTestServer


@contextlib.asynccontextmanager
async def stripe_server(**kwargs: object) -> AsyncIterator[RunningStripe]:
    app = StripeTestServer([NAMES.input, NAMES.cached, NAMES.output], **kwargs)  # type: ignore[arg-type]
    async with served(app, lifespan="off") as url:
        yield RunningStripe(url, app)
