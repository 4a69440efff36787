"""The private PostgreSQL helper: its faults do what they say, and it leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest

from tests.private_postgres import PrivatePostgres, private_postgres

# What asyncpg raises on a connection whose backend was terminated (which one depends on its state).
_DROPPED = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


async def test_faults_and_clean_up() -> None:
    async with private_postgres() as pg:
        assert pg.url.endswith(f":{pg.port}/gateway")
        victim = await asyncpg.connect(pg.url, server_settings={"application_name": "victim"})
        bystander = await asyncpg.connect(pg.url, server_settings={"application_name": "bystander"})
        await victim.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
        assert {name for _, name in await pg.backends()} == {"victim", "bystander"}

        assert await pg.terminate_backends("victim") == 1
        with pytest.raises(_DROPPED):
            await victim.fetchval("SELECT 1")
        assert await bystander.fetchval("SELECT 1") == 1
        assert await pg.terminate_backends() == 1  # every other backend, never the helper's own
        with pytest.raises(_DROPPED):
            await bystander.fetchval("SELECT 1")

        started = time.monotonic()
        await pg.down_for(1.0)
        assert time.monotonic() - started >= 1.0 and pg.running
        pg.kill()  # an immediate stop, like a crash
        assert not pg.running
        with pytest.raises(OSError):
            await asyncpg.connect(pg.url, timeout=2)
        pg.restart()
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SELECT n FROM kept") == 1  # the data survived both
        finally:
            await conn.close()
        root = pg.root
    assert not await asyncio.to_thread(os.path.exists, root)


def test_close_is_safe_before_start_and_twice() -> None:
    pg = PrivatePostgres()
    pg.close()
    pg.close()
    assert not os.path.exists(pg.root)
