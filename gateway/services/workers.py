"""Workers added and removed at runtime through the admin API or the CLI, stored in SQL for every replica.

A worker takes the same fields as in the config file: ``url``, ``api_key``, ``headers``, ``models``. Its key
is stored only as a reference, ``os.environ/NAME``, read on every replica when it loads the worker: the
database never holds a worker's secret, and neither the API, the CLI, the logs nor the metrics show one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.gateway_tables import Worker as WorkerRow
from gateway.routing.pool import WorkerPool
from gateway.routing.worker import Worker, worker_id_for
from gateway.services.keys import now
from gateway.services.service_errors import Conflict, InvalidInput, NotFound
from gateway.upstream.fleet_config import FleetConfigError, WorkerSpec, check_url, env_reference, parse_worker

log = logging.getLogger("gateway.workers")


def check_worker_url(url: str) -> str:
    """``url`` without a trailing slash if it is an http(s) URL with a host, else ``InvalidInput``."""
    try:
        return check_url(url, "url")
    except FleetConfigError as exc:
        raise InvalidInput(exc.reason, param="url") from None


def worker_spec(url: str, api_key: str | None = None, headers: Mapping[str, str] | None = None,
                models: list[str] | None = None) -> WorkerSpec:
    """The spec of a worker added at runtime; ``InvalidInput`` names the field that is wrong. The key must
    be ``os.environ/NAME`` (set on this replica): a literal key is refused, it would be stored."""
    if api_key is not None and env_reference(api_key) is None:
        raise InvalidInput("a worker's api_key is given as os.environ/NAME (an environment variable set on every "
                           "replica); the gateway does not store worker secrets", param="api_key")
    entry: dict[str, Any] = {"url": url, "api_key": api_key, "headers": dict(headers or {}), "models": models}
    try:
        return parse_worker({k: v for k, v in entry.items() if v is not None}, "")
    except FleetConfigError as exc:
        raise InvalidInput(exc.reason, param=exc.where.lstrip(".") or None) from None


class WorkerService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], pool: WorkerPool) -> None:
        self._sessions = sessions
        self._pool = pool
        # A sync reads SQL, then changes the pool: an add or remove between the two would be undone.
        self._lock = asyncio.Lock()
        self._unloadable: dict[str, str] = {}  # worker id -> why it cannot be loaded here (logged once)

    async def add(self, url: str, api_key: str | None = None, headers: Mapping[str, str] | None = None,
                  models: list[str] | None = None) -> Worker:
        spec = worker_spec(url, api_key, headers, models)
        wid = worker_id_for(spec.url)
        async with self._lock:
            known = self._pool.get(wid)
            if known is not None and known.source == "config":
                raise Conflict(f"worker {spec.url} comes from the configuration; change it there")
            async with self._sessions() as s:
                row = await s.get(WorkerRow, wid)
                if row is None:
                    s.add(WorkerRow(id=wid, url=spec.url, created_at=now(), api_key_ref=spec.api_key_ref,
                                    headers=_stored_headers(headers), models=list(spec.models) or None))
                else:  # adding again changes its fields
                    row.api_key_ref = spec.api_key_ref
                    row.headers = _stored_headers(headers)
                    row.models = list(spec.models) or None
                try:
                    await s.commit()
                except IntegrityError:  # added concurrently: the other one's fields stand
                    await s.rollback()
            worker = self._pool.add(spec, "admin")
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
        """Bring this replica's pool in line with SQL; returns the workers that went away. A worker whose
        key reference names a variable this replica lacks is left out, with one error line."""
        async with self._lock:
            async with self._sessions() as s:
                rows = list((await s.execute(select(WorkerRow))).scalars())
            specs: list[WorkerSpec] = []
            for row in rows:
                entry: dict[str, Any] = {"url": row.url, "headers": row.headers or None, "models": row.models or None}
                if row.api_key_ref:
                    entry["api_key"] = row.api_key_ref
                try:
                    specs.append(parse_worker({k: v for k, v in entry.items() if v is not None}, f"worker {row.id}"))
                    self._unloadable.pop(row.id, None)
                except FleetConfigError as exc:
                    if self._unloadable.get(row.id) != str(exc):
                        log.error("worker %s (%s) cannot be used on this replica: %s", row.id, row.url, exc)
                    self._unloadable[row.id] = str(exc)
            return self._pool.sync_admin(specs)


def _stored_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(headers) if headers else None
