"""A throwaway redis-server on a free port, for tests that kill, freeze or pause Redis (never the shared
one on 6379, which every other test and engineer uses)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from workersim.run import free_port


class PrivateRedis:
    """A throwaway redis-server on a free port (never the shared one on 6379: tests kill this one)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = tempfile.mkdtemp(prefix="gw-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for the outage tests"
        self._proc = subprocess.Popen(  # noqa: ASYNC220 - starts in milliseconds, once per test
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.data_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis.from_url(self.url)
        try:
            for _ in range(200):
                try:
                    if await client.ping():
                        return
                except (OSError, RedisError):
                    pass
                await asyncio.sleep(0.02)
            raise RuntimeError("private redis-server did not start")
        finally:
            await client.aclose()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)

    async def commandstats(self) -> dict[str, int]:
        client = Redis.from_url(self.url)
        try:
            info = await client.info("commandstats")
        finally:
            await client.aclose()
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.data_dir, ignore_errors=True)
