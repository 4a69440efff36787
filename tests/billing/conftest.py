"""Ledger fixtures: a migrated SQLite file and the session's PostgreSQL database, a Redis stream key."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.usage_record import UsageRecord
from gateway.config import Settings
from gateway.db import engine as db
from tests.conftest import REDIS_URL


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def ledger_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                        pg_database: str) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("ledger") / "ledger.db"
        url = Settings(database_url=f"sqlite:///{path}").sqlalchemy_url
    else:
        url = Settings(database_url=pg_database).sqlalchemy_url
    await db.upgrade(url)
    engine = db.make_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def stream_key(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    key = f"gwtest-billing-{secrets.token_hex(4)}:{{usage}}"
    yield key
    await redis_client.delete(key, key + ":dead")


def make_record(org: str, n: int, **overrides: object) -> UsageRecord:
    values: dict[str, object] = dict(
        request_id=f"req_{org}_{n}", org_id=org, key_id=f"key_{org}", model="grok-code-fast-1",
        requested_model="grok-code-fast-1", worker="sim-0", prompt_tokens=100 + n, cached_tokens=50,
        output_tokens=10, reasoning_tokens=0, list_ticks=0, billed_ticks=0, plan="list",
        started_at_ms=1_764_000_000_000 + n * 1000, ttfb_ms=5, duration_ms=20, status="ok", http_status=200,
        reported=True, stream=False)
    values.update(overrides)
    record = UsageRecord(**values)  # type: ignore[arg-type]
    cost = record.tokens.uncached * 2_000 + record.cached_tokens * 200 + record.output_tokens * 15_000
    priced = {name: cost for name in ("list_ticks", "billed_ticks") if name not in overrides}
    return UsageRecord(**{**values, **priced})  # type: ignore[arg-type]
