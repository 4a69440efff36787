"""A throwaway PostgreSQL server on a free port (``initdb`` + ``pg_ctl``), for tests that stop the database
mid-test (never the shared one on 5432). ``initdb`` refuses to run as root: as root, the server runs as the
``postgres`` user (``runuser``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from workersim.run import free_port


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    assert found, f"{name} is needed for the PostgreSQL outage tests"
    return str(found)


class PrivatePostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data_dir = self.root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, *argv: str) -> None:
        if os.geteuid() == 0:
            argv = ("runuser", "-u", "postgres", "--", *argv)
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{argv} failed: {out.decode(errors='replace')[-2000:]}")

    async def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        await self._run(_binary("initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "--no-sync")

    async def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        await self._run(_binary("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "log"), "-o", options,
                        "-w", "-t", "30", "start")

    async def stop(self) -> None:
        """Stop at once (what a crashed database host looks like to its clients)."""
        await self._run(_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    async def stop_quietly(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self.stop()


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        await server.init()
        await server.start()
        yield server
    finally:
        await server.stop_quietly()
        shutil.rmtree(server.root, ignore_errors=True)
