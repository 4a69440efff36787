"""Workers added and removed at runtime through the admin API, stored in SQL for every replica."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Worker as WorkerRow
from gateway.routing.pool import WorkerPool
from gateway.routing.worker import Worker, worker_id_for
from gateway.services.keys import NotFound, now


class WorkerService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], pool: WorkerPool) -> None:
        self._sessions = sessions
        self._pool = pool
        # A sync reads SQL, then changes the pool: an add or remove between the two would be undone.
        self._lock = asyncio.Lock()

    async def add(self, url: str) -> Worker:
        url = url.rstrip("/")
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
