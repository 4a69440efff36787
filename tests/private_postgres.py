"""A throwaway PostgreSQL cluster on a free loopback port, for tests that stop, kill or cut PostgreSQL
(never the shared server on 5432, which every other test and engineer uses).

The cluster is made by ``initdb`` (trust authentication, no fsync: a test database needs no durability)
in a temporary folder and served by ``pg_ctl``; the binaries are found on PATH or under
``/usr/lib/postgresql/*/bin`` (Debian keeps them there). PostgreSQL refuses to run as root: when this
process is root, every ``initdb`` / ``pg_ctl`` call runs as the ``postgres`` OS user through ``runuser``
(the folder is handed to that user first); otherwise they run as the current user. The superuser of the
cluster is ``postgres``; ``database`` (default ``gateway``) is created at the first start.

Faults: ``kill`` (immediate shutdown: no checkpoint, clients see their connections drop), ``restart``
(stop, then start on the same port and folder: the data survives), ``down_for`` (stopped for N seconds),
``terminate_backends`` (``pg_terminate_backend`` on every other backend, or those of one
``application_name``). ``close`` stops the server and removes the folder; the context managers and an
``atexit`` hook make sure that happens.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg

from workersim.run import free_port

OS_USER = "postgres"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not candidates:
        raise RuntimeError(f"{name} not found (install the PostgreSQL server: apt-get install postgresql)")
    return candidates[-1]


class PrivatePostgres:
    """One private cluster: ``url`` (``postgresql://postgres@127.0.0.1:PORT/DB``), ``port``, ``data_dir``."""

    def __init__(self, database: str = "gateway") -> None:
        self.port = free_port()
        self.database = database
        self.root = tempfile.mkdtemp(prefix="gw-pg-")
        self.data_dir = os.path.join(self.root, "data")
        self.log_file = os.path.join(self.root, "server.log")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_other_user = os.geteuid() == 0
        self._initialised = False
        self._closed = False
        if self._as_other_user:
            entry = pwd.getpwnam(OS_USER)  # KeyError: no postgres user to run the server as
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        atexit.register(self.close)

    # -- commands --------------------------------------------------------------------------------------
    def _run(self, *argv: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_other_user:
            command = ["runuser", "-u", OS_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                                check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({result.returncode}): {result.stderr.strip()}"
                               f"\n{self._log_tail()}")
        return result

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.log_file).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _pg_ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(_binary("pg_ctl"), "-D", self.data_dir, *args, timeout=timeout, check=check)

    # -- life cycle ------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Start (``initdb`` first, the first time) and wait until connections are accepted."""
        if not self._initialised:
            self._run(_binary("initdb"), "-D", self.data_dir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--no-sync", "--no-instructions", timeout=timeout)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._pg_ctl("-w", "-t", str(int(timeout)), "-l", self.log_file, "-o", options, "start",
                     timeout=timeout + 5)
        if not self._initialised:
            self._run(_binary("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                      "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{self.database}"')
            self._initialised = True

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop: ``fast`` (roll back and disconnect everybody, checkpoint) or ``immediate`` (a crash: no
        checkpoint, recovery at the next start)."""
        if self.running:
            self._pg_ctl("-w", "-t", str(int(timeout)), "-m", mode, "stop", timeout=timeout + 5)

    def kill(self) -> None:
        """Stop at once, like a crash (``pg_ctl stop -m immediate``)."""
        self.stop("immediate")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port and folder (the data survives)."""
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        if not os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            return False
        return self._pg_ctl("status", timeout=15, check=False).returncode == 0

    async def down_for(self, seconds: float, mode: str = "fast") -> None:
        """Stopped for ``seconds``, then started again (blocking calls run in a thread)."""
        await asyncio.to_thread(self.stop, mode)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.start)

    async def terminate_backends(self, application_name: str | None = None) -> int:
        """``pg_terminate_backend`` on the client backends of ``database`` (those of ``application_name``
        only, when given), never this connection's own. Returns how many were terminated."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            query = ("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = $1")
            if application_name is None:
                return int(await conn.fetchval(query, self.database))
            return int(await conn.fetchval(query + " AND application_name = $2", self.database, application_name))
        finally:
            await conn.close()

    async def backends(self) -> list[tuple[int, str]]:
        """(pid, application_name) of the client backends connected to ``database``."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            rows = await conn.fetch("SELECT pid, application_name FROM pg_stat_activity WHERE datname = $1 "
                                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                                    self.database)
            return [(int(r["pid"]), str(r["application_name"])) for r in rows]
        finally:
            await conn.close()

    def close(self) -> None:
        """Stop the server (immediately) and remove its folder; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, OSError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.close)


@contextlib.contextmanager
def private_postgres_sync(database: str = "gateway") -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(database)
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.asynccontextmanager
async def private_postgres(database: str = "gateway") -> AsyncIterator[PrivatePostgres]:
    """A started private cluster (``start`` runs in a thread: initdb takes a second or two)."""
    server = PrivatePostgres(database)
    try:
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.close)
