"""Workers added and removed at runtime through the admin API or the CLI, stored in SQL for every replica."""

from __future__ import annotations

import asyncio
import contextlib
import re
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.gateway_tables import Worker as WorkerRow
from gateway.routing.pool import WorkerPool
from gateway.routing.worker import Worker, worker_id_for
from gateway.services.keys import now
from gateway.services.service_errors import InvalidInput, NotFound

_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # control characters and spaces never belong in a worker URL


def check_worker_url(url: str) -> str:
    """``url`` without a trailing slash if it is an http(s) URL with a host, else ``InvalidInput``."""
    if _UNSAFE.search(url):
        raise InvalidInput("a worker URL may not contain spaces or control characters", param="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise InvalidInput(f"not a valid URL: {exc}", param="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("a worker URL is http:// or https:// followed by a host", param="url")
    return url.rstrip("/")


class WorkerService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], pool: WorkerPool) -> None:
        self._sessions = sessions
        self._pool = pool
        # A sync reads SQL, then changes the pool: an add or remove between the two would be undone.
        self._lock = asyncio.Lock()

    async def add(self, url: str) -> Worker:
        url = check_worker_url(url)
        async with self._lock:
            async with self._sessions() as s:
                s.add(WorkerRow(id=worker_id_for(url), url=url, created_at=now()))
                with contextlib.suppress(IntegrityError):  # already registered: adding is idempotent
                    await s.commit()
            worker = self._pool.add(url, "admin")
        await self._pool.check(worker)
        return worker

    async def remove(self, worker_id: str) -> None:
        async with self._lock:
            await self._remove(worker_id)

    async def _remove(self, worker_id: str) -> None:
        async with self._sessions() as s:
            result = await s.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))
            await s.commit()
        worker = self._pool.get(worker_id)
        if worker is not None and worker.source == "config":
            raise NotFound(f"worker {worker_id!r} comes from the configuration; remove it there")
        if self._pool.remove(worker_id) is None and result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"worker {worker_id!r} not found")

    async def sync(self) -> list[Worker]:
        """Bring this replica's pool in line with SQL; returns the workers that went away."""
        async with self._lock:
            async with self._sessions() as s:
                urls = list((await s.execute(select(WorkerRow.url))).scalars())
            return self._pool.sync_admin(urls)
