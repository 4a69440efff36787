"""The worker pool: which workers exist, which are healthy, what they serve, how busy they are.

Workers come from the settings and from the admin API (stored in SQL, re-read by every replica in
the background). A health loop asks each worker for ``GET /health`` and ``GET /v1/models``; a worker
that fails is taken out of rotation until a check succeeds again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
import orjson

log = logging.getLogger("gateway.pool")


def worker_id_for(url: str) -> str:
    """Stable across replicas and restarts, so shared state can name a worker."""
    return "w-" + hashlib.sha256(url.encode()).hexdigest()[:12]


@dataclass(slots=True)
class Worker:
    id: str
    url: str
    source: str  # "config" or "admin"
    healthy: bool = False
    models: frozenset[str] = frozenset()
    inflight: int = 0
    last_error: str | None = None
    # Load scraped from the worker's /metrics (vLLM names), when it exposes them.
    metrics: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "url": self.url,
            "source": self.source,
            "healthy": self.healthy,
            "models": sorted(self.models),
            "inflight": self.inflight,
            "last_error": self.last_error,
        }


class WorkerPool:
    def __init__(self, session: aiohttp.ClientSession, health_timeout_s: float = 2.0) -> None:
        self._session = session
        self._workers: dict[str, Worker] = {}
        self._health_timeout = aiohttp.ClientTimeout(total=health_timeout_s)
        self._rr = 0

    # --- membership -------------------------------------------------------------------------
    def add(self, url: str, source: str) -> Worker:
        url = url.rstrip("/")
        wid = worker_id_for(url)
        worker = self._workers.get(wid)
        if worker is None:
            worker = Worker(id=wid, url=url, source=source)
            self._workers[wid] = worker
        return worker

    def remove(self, worker_id: str) -> Worker | None:
        return self._workers.pop(worker_id, None)

    def sync_admin(self, urls: Iterable[str]) -> list[Worker]:
        """Make the admin-added workers exactly ``urls``; returns the workers that were removed."""
        wanted = {worker_id_for(u.rstrip("/")): u for u in urls}
        removed = [w for w in self._workers.values() if w.source == "admin" and w.id not in wanted]
        for w in removed:
            del self._workers[w.id]
        for url in wanted.values():
            self.add(url, "admin")
        return removed

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def all(self) -> list[Worker]:
        return list(self._workers.values())

    # --- serving ----------------------------------------------------------------------------
    def candidates(self, model: str) -> list[Worker]:
        return [w for w in self._workers.values() if w.healthy and model in w.models]

    def models(self) -> list[str]:
        served: set[str] = set()
        for w in self._workers.values():
            if w.healthy:
                served |= w.models
        return sorted(served)

    def known_models(self) -> set[str]:
        """Models any worker has served, healthy now or not (unknown ones are a 404, not a 503)."""
        known: set[str] = set()
        for w in self._workers.values():
            known |= w.models
        return known

    def has_healthy(self) -> bool:
        return any(w.healthy for w in self._workers.values())

    def mark_failed(self, worker: Worker, reason: str) -> None:
        """Passive health: a connection failure takes the worker out until the next good check."""
        if worker.healthy:
            log.warning("worker %s (%s) marked unhealthy: %s", worker.id, worker.url, reason)
        worker.healthy = False
        worker.last_error = reason

    # --- health -----------------------------------------------------------------------------
    async def check(self, worker: Worker) -> None:
        try:
            async with self._session.get(worker.url + "/health", timeout=self._health_timeout) as resp:
                ok = resp.status == 200
                await resp.read()
            if ok:
                async with self._session.get(worker.url + "/v1/models", timeout=self._health_timeout) as resp:
                    data = orjson.loads(await resp.read()) if resp.status == 200 else {}
                models = frozenset(
                    str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m
                )
                ok = bool(models)
                if ok:
                    worker.models = models
            reason = None if ok else "health check failed"
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, AttributeError) as exc:
            ok, reason = False, f"health check error: {exc.__class__.__name__}"
        if ok and not worker.healthy:
            log.info("worker %s (%s) healthy, models %s", worker.id, worker.url, sorted(worker.models))
        elif not ok and worker.healthy:
            log.warning("worker %s (%s) unhealthy: %s", worker.id, worker.url, reason)
        worker.healthy = ok
        worker.last_error = reason

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(w) for w in list(self._workers.values())))
