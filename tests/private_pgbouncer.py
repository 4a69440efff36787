"""A throwaway PgBouncer on a free loopback port, in front of a PostgreSQL server (the shared one on 5432 by
default), for the tests that check the gateway behind a transaction-pooling proxy.

``pool_mode`` is ``transaction`` unless told otherwise, and ``pool_size`` is small (2 server connections
per database and user), so client connections really do take turns on the same server connections: a
statement prepared by one client, or a ``SET`` it left behind, is met by the next. Authentication is
``trust`` (the user must still be listed in the auth file: ``postgres``), as on the shared server.

The binary is Debian's ``pgbouncer`` (``/usr/sbin``; .ci/run installs it). It refuses to run as root:
when this process is root, it runs as the ``postgres`` OS user (``-u``), after the folder is handed over.
``close`` stops it and removes the folder; the context manager and an ``atexit`` hook make sure of that.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from workersim.run import free_port

OS_USER = "postgres"
INSTALL = "apt-get install -y pgbouncer (.ci/run installs it)"
START_TIMEOUT_S = 15.0


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.path.exists(p)), None)


class PrivatePgBouncer:
    """One PgBouncer: ``url_for(database)`` is ``postgresql://postgres@127.0.0.1:PORT/DATABASE``."""

    def __init__(self, upstream: str = "postgresql://postgres@127.0.0.1:5432/postgres", *,
                 pool_mode: str = "transaction", pool_size: int = 2) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError(f"pgbouncer is not installed: {INSTALL}")
        self.binary = binary
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname or "127.0.0.1", target.port or 5432
        self.user = target.username or "postgres"
        self.pool_mode, self.pool_size = pool_mode, pool_size
        self.port = free_port()
        self.root = tempfile.mkdtemp(prefix="gw-pgbouncer-")
        self.config = os.path.join(self.root, "pgbouncer.ini")
        self.log_file = os.path.join(self.root, "pgbouncer.log")
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        atexit.register(self.close)

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _write_config(self) -> None:
        Path(self.root, "users.txt").write_text(f'"{self.user}" ""\n')
        Path(self.config).write_text(f"""[databases]
* = host={self.upstream_host} port={self.upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root}/users.txt
admin_users = {self.user}
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
max_db_connections = {self.pool_size}
logfile = {self.log_file}
pidfile = {self.root}/pgbouncer.pid
""")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.log_file).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def launch(self) -> None:
        """Write the configuration and start the process (``start`` then waits for it to answer)."""
        self._write_config()
        command = [self.binary, self.config]
        if os.geteuid() == 0:
            entry = pwd.getpwnam(OS_USER)
            for path in (self.root, *(str(p) for p in Path(self.root).iterdir())):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            command = [self.binary, "-u", OS_USER, self.config]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def start(self) -> None:
        """Start and wait (up to START_TIMEOUT_S) until it answers a query, through to PostgreSQL."""
        await asyncio.to_thread(self.launch)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await self._answers()
        except TimeoutError:
            raise RuntimeError(f"pgbouncer did not answer within {START_TIMEOUT_S} s\n{self.log_tail()}") from None

    async def _answers(self) -> None:
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                err = (self._process.stderr.read() if self._process.stderr else b"").decode(errors="replace")
                raise RuntimeError(f"pgbouncer exited ({self._process.returncode}): {err.strip()}\n{self.log_tail()}")
            try:
                conn = await asyncpg.connect(self.url_for("postgres"), timeout=2, statement_cache_size=0)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return

    def close(self) -> None:
        """Stop it and remove its folder; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # PgBouncer's immediate shutdown
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.close)


@contextlib.asynccontextmanager
async def private_pgbouncer(upstream: str = "postgresql://postgres@127.0.0.1:5432/postgres", *,
                            pool_mode: str = "transaction", pool_size: int = 2) -> AsyncIterator[PrivatePgBouncer]:
    bouncer = PrivatePgBouncer(upstream, pool_mode=pool_mode, pool_size=pool_size)
    try:
        await bouncer.start()
        yield bouncer
    finally:
        bouncer.close()
