"""Fixtures: real PostgreSQL and Redis (each test session gets its own database and key prefix), the
embedded default (SQLite, in-process state), simulated workers and a gateway served over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import uvicorn

from gateway.app import GatewayApp, create_app
from gateway.config import Settings
from gateway.server import server_config
from workersim.run import RunningSim, start_sim_server
from workersim.sim_settings import SimConfig

PG_ADMIN_DSN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "test-admin-key"
MODEL = "grok-code-fast-1"

BACKENDS = ["embedded", "shared"]


@dataclass
class Backend:
    """Where state lives: ``embedded`` (SQLite + in-process) or ``shared`` (PostgreSQL + Redis)."""

    name: str
    database_url: str
    redis_url: str
    redis_prefix: str


@contextlib.asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[str]:
    """An empty PostgreSQL database of its own on the shared server (``prefix`` + a random suffix), dropped
    afterwards: its plain ``postgresql://`` URL."""
    name = prefix + secrets.token_hex(4)
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def pg_database() -> AsyncIterator[str]:
    async with scratch_database("gw_test_") as url:
        yield url


@pytest.fixture(scope="session")
async def redis_prefix() -> AsyncIterator[str]:
    prefix = "gwtest-" + secrets.token_hex(4)
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest, embedded_dir: Path, pg_database: str, redis_prefix: str) -> Backend:
    if request.param == "embedded":
        return Backend("embedded", f"sqlite:///{embedded_dir / 'gateway.db'}", "", "gw")
    return Backend("shared", pg_database, REDIS_URL, redis_prefix)


@dataclass
class ServedGateway:
    url: str
    app: GatewayApp
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


class _InLoopServer(uvicorn.Server):
    """Served inside the test's event loop: leaves the signal handlers to pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_server(app: Any, config: uvicorn.Config | None = None,
                       **options: Any) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    """Serve an ASGI app on a free loopback port inside the running loop (under ``config`` if given, else
    uvicorn's with ``options``); returns (url, server, task). Stop it with ``server.should_exit = True; await task``."""
    if config is None:
        config = uvicorn.Config(app, **{"host": "127.0.0.1", "port": 0, "loop": "none", "log_level": "warning",
                                        "access_log": False, **options})
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"{type(app).__name__} did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, task


@contextlib.asynccontextmanager
async def served(app: Any, **config: Any) -> AsyncIterator[str]:
    """``start_server`` as a context manager yielding the URL."""
    url, server, task = await start_server(app, **config)
    try:
        yield url
    finally:
        server.should_exit = True
        await task


async def serve_gateway(settings: Settings) -> ServedGateway:
    """The gateway under the same server configuration as ``gateway serve`` (gateway/server.py)."""
    app = create_app(settings)
    url, server, task = await start_server(app, server_config(app, settings, host="127.0.0.1", port=0, loop="none"))
    return ServedGateway(url, app, server, task)


def gateway_settings(backend: Backend, workers: list[Any], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "workers": workers,
        "database_url": backend.database_url,
        "redis_url": backend.redis_url,
        "redis_prefix": backend.redis_prefix,
        "admin_key": ADMIN_KEY,
        "health_interval_s": 0.2,
        "worker_sync_interval_s": 0.2,
        "key_cache_ttl_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def sims() -> AsyncIterator[list[RunningSim]]:
    started = [await start_sim_server(SimConfig(worker_id=f"sim-{i}", time_scale=0.0, seed=i)) for i in range(2)]
    yield started
    for s in started:
        await s.stop()


@pytest.fixture
async def gateway(backend: Backend, sims: list[RunningSim]) -> AsyncIterator[ServedGateway]:
    served = await serve_gateway(gateway_settings(backend, [s.url for s in sims]))
    yield served
    await served.stop()


@pytest.fixture
async def api_key(gateway: ServedGateway) -> str:
    rt = gateway.app.runtime
    org = await rt.keys.get_or_create_org("org-" + secrets.token_hex(3))
    return (await rt.keys.create_key(org.id, "test")).key


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def make_openai(gateway: ServedGateway) -> AsyncIterator[Callable[[str], Any]]:
    from openai import AsyncOpenAI

    clients: list[AsyncOpenAI] = []

    def make(key: str) -> AsyncOpenAI:
        client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=20)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()
