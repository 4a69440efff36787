"""The worker pool: which workers exist, which are healthy, what they serve, how busy they are.

Workers come from the settings and from the admin API (stored in SQL, re-read by every replica in
the background). A health loop asks each worker for ``GET /health`` and ``GET /v1/models``; a worker
that fails is taken out of rotation until a check succeeds again. The same loop scrapes the load the
router uses from ``GET /metrics`` (vLLM or SGLang names): requests waiting, KV usage, KV capacity, and
the prefix-cache query counter, whose going backwards means the worker restarted.

Listeners (the router) hear of workers that were removed, restarted or came back after failing, since
their cache is gone or unknown: ``pool.listeners.append(fn)``, ``fn(event, worker)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from gateway.pipeline.contract import Probe, ProbeFailed
from gateway.routing.worker import Worker, WorkerSettings, worker_id_for

log = logging.getLogger("gateway.pool")

REMOVED = "removed"
RESTARTED = "restarted"
WorkerListener = Callable[[str, "Worker"], None]

_WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")
_QUERIES = ("vllm:prefix_cache_queries_total",)
_PROBE_LIMIT = 16 << 20  # bytes of a health, models or metrics answer read at most (vLLM's /metrics: ~100 KB)


@dataclass(frozen=True, slots=True)
class _PlainWorker:
    """A worker known only by its URL (``WorkerSettings`` with no key, headers or pinned models)."""

    url: str
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    api_key_ref: str | None = None


class _Refused(Exception):
    """The worker answered 401 or 403: its key or headers are wrong."""


def _label(labels: str, name: str) -> str | None:
    at = labels.find(name + '="')
    if at < 0:
        return None
    at += len(name) + 2
    end = labels.find('"', at)
    return labels[at:end] if end >= 0 else None


def parse_metrics(text: str) -> dict[str, float]:
    """The load figures routing uses, from Prometheus text: ``waiting``, ``kv`` (0..1), ``kv_tokens``
    (from ``vllm:cache_config_info``'s num_gpu_blocks x block_size) and ``queries`` (a counter)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.rfind(" ")
        if space < 0:
            continue
        name = line[:brace] if 0 <= brace < space else line[:space]
        try:
            value = float(line[space + 1:])
        except ValueError:
            continue
        if name in _WAITING:
            out["waiting"] = out.get("waiting", 0.0) + value
        elif name in _KV_USAGE:
            out["kv"] = max(out.get("kv", 0.0), value)
        elif name in _QUERIES:
            out["queries"] = out.get("queries", 0.0) + value
        elif name == "vllm:cache_config_info" and brace >= 0:
            labels = line[brace:space]
            blocks, size = _label(labels, "num_gpu_blocks"), _label(labels, "block_size")
            if blocks and size and blocks.isdigit() and size.isdigit():
                out["kv_tokens"] = float(int(blocks) * int(size))
    return out


class WorkerPool:
    def __init__(self, probe: Probe, health_timeout_s: float = 2.0) -> None:
        self._probe = probe
        self._workers: dict[str, Worker] = {}
        self._health_timeout = health_timeout_s
        self._rr = 0
        self.listeners: list[WorkerListener] = []

    def _tell(self, event: str, worker: Worker) -> None:
        for listener in self.listeners:
            listener(event, worker)

    # --- membership -------------------------------------------------------------------------
    def add(self, spec: WorkerSettings | str, source: str) -> Worker:
        """Add a worker, or give a known one the spec's key, headers and models (a change clears its
        misconfigured mark: the next check tells)."""
        if isinstance(spec, str):
            spec = _PlainWorker(url=spec.rstrip("/"))
        wid = worker_id_for(spec.url)
        worker = self._workers.get(wid)
        if worker is None:
            worker = Worker.from_spec(wid, spec, source)
            self._workers[wid] = worker
        elif worker.source == source and worker.configure(spec) and worker.misconfigured:
            worker.misconfigured = False
            worker.healthy = False
            worker.last_error = "configuration changed; not checked yet"
        return worker

    def remove(self, worker_id: str) -> Worker | None:
        worker = self._workers.pop(worker_id, None)
        if worker is not None:
            self._tell(REMOVED, worker)
        return worker

    def sync_admin(self, specs: Iterable[WorkerSettings | str]) -> list[Worker]:
        """Make the admin-added workers exactly ``specs``; returns the workers that were removed."""
        wanted = {worker_id_for((s if isinstance(s, str) else s.url).rstrip("/")): s for s in specs}
        removed = [w for w in self._workers.values() if w.source == "admin" and w.id not in wanted]
        for w in removed:
            del self._workers[w.id]
            self._tell(REMOVED, w)
        for spec in wanted.values():
            self.add(spec, "admin")
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

    def knows_model(self, model: str) -> bool:
        """``model`` is in ``known_models()`` (without building the set: this runs per request)."""
        return any(model in w.models for w in self._workers.values())

    def has_healthy(self) -> bool:
        return any(w.healthy for w in self._workers.values())

    def mark_failed(self, worker: Worker, reason: str) -> None:
        """Passive health: a connection failure takes the worker out until the next good check."""
        if worker.healthy:
            log.warning("worker %s (%s) marked unhealthy: %s", worker.id, worker.url, reason)
        worker.healthy = False
        worker.last_error = reason

    def mark_misconfigured(self, worker: Worker, reason: str) -> None:
        """The worker refused the gateway's credentials (401/403): out of rotation, not down. Logged at
        error level once per transition; health checks go on, so a fixed key brings it back."""
        if not worker.misconfigured:
            log.error("worker %s (%s) is MISCONFIGURED, out of rotation: %s; check its api_key and headers",
                      worker.id, worker.url, reason)
        worker.misconfigured = True
        worker.healthy = False
        worker.last_error = reason

    # --- health -----------------------------------------------------------------------------
    async def _get(self, worker: Worker, path: str) -> tuple[int, bytes]:
        status, body = await self._probe.get(worker.url, path, worker.headers, self._health_timeout, _PROBE_LIMIT)
        if status in (401, 403):
            raise _Refused(f"{path} answered {status}")
        return status, body

    async def check(self, worker: Worker) -> None:
        try:
            status, _ = await self._get(worker, "/health")
            ok = status == 200
            if ok:
                status, body = await self._get(worker, "/v1/models")
                data = orjson.loads(body) if status == 200 else {}
                models = frozenset(
                    str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m
                )
                ok = bool(models) or (status == 200 and bool(worker.pinned_models))
                if ok:
                    worker.models = worker.pinned_models or models
                    await self._scrape(worker)
            reason = None if ok else "health check failed"
        except _Refused as exc:
            self.mark_misconfigured(worker, f"the worker refused the gateway's credentials ({exc})")
            return
        except ProbeFailed as exc:
            ok, reason = False, f"health check error: {exc}"
        except (orjson.JSONDecodeError, AttributeError) as exc:
            ok, reason = False, f"health check error: {exc.__class__.__name__}"
        if worker.misconfigured:
            log.warning("worker %s (%s) accepts the gateway's credentials again", worker.id, worker.url)
            worker.misconfigured = False
        if ok and not worker.healthy:
            log.info("worker %s (%s) healthy, models %s", worker.id, worker.url, sorted(worker.models))
            if worker.last_error is not None:  # it failed before: its cache may be gone
                self._tell(RESTARTED, worker)
        elif not ok and worker.healthy:
            log.warning("worker %s (%s) unhealthy: %s", worker.id, worker.url, reason)
        worker.healthy = ok
        worker.last_error = reason

    async def _scrape(self, worker: Worker) -> None:
        """Load figures from ``/metrics``; a worker without them keeps its last (or no) figures."""
        try:
            status, body = await self._get(worker, "/metrics")
            if status != 200:
                return
            text = body.decode(errors="replace")
        except _Refused as exc:
            log.debug("metrics of %s not read: %s", worker.id, exc)
            return
        except ProbeFailed as exc:
            log.debug("metrics of %s not read: %s", worker.id, exc)
            return
        scraped = parse_metrics(text)
        before = worker.metrics.get("queries")
        worker.metrics = scraped
        after = scraped.get("queries")
        if before is not None and after is not None and after < before:
            log.info("worker %s (%s) restarted (its prefix-cache counter went back)", worker.id, worker.url)
            self._tell(RESTARTED, worker)

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(w) for w in list(self._workers.values())))
