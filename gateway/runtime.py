"""What the app's lifespan builds and hands to the API: clients, stores and services, in one object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.auth import KeyCache
from gateway.billing_runtime import BillingRuntime
from gateway.budget import Budgets
from gateway.config import Settings
from gateway.db import engine as db
from gateway.limits.stage import RateLimitStage
from gateway.observability.metrics import GatewayMetrics, StatsCollector
from gateway.observability.requestlog import RequestLog
from gateway.proxy.forward import Forwarder
from gateway.proxy.upstream import make_session
from gateway.routing.choose import RuleParams
from gateway.routing.policy import PrefixRouter, RouterConfig
from gateway.routing.pool import WorkerPool
from gateway.services.billing import BillingService
from gateway.services.keys import KeyService
from gateway.services.plans import PlanService
from gateway.services.workers import WorkerService
from gateway.state.base import StateStore
from gateway.state.keys import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.state.resp import RespClient

log = logging.getLogger("gateway")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: aiohttp.ClientSession
    redis: Redis | None
    state: StateStore
    local_state: MemoryState
    keyspace: KeySpace
    pool: WorkerPool
    keys: KeyService
    key_cache: KeyCache
    workers: WorkerService
    forwarder: Forwarder
    metrics: GatewayMetrics
    request_log: RequestLog
    billing: BillingRuntime
    router: PrefixRouter
    limiter: RateLimitStage
    plans: PlanService
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def operational_stats(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """What the components count as plain attributes, for the metrics collector (scrape time only)."""
        r, b = self.router.stats, self.billing.stats
        out: dict[str, list[tuple[dict[str, str], float]]] = {
            "gateway_routing_predicted_cached_tokens_total": [({}, r.predicted_cached_tokens)],
            "gateway_routing_reported_cached_tokens_total": [({}, r.reported_cached_tokens)],
            "gateway_routing_prompt_tokens_total": [({}, r.prompt_tokens)],
            "gateway_routing_feedback_corrections_total": [({}, r.feedback_corrections)],
            "gateway_routing_local_fallbacks_total": [({}, r.local_fallbacks)],
            "gateway_routing_worker_purges_total": [({}, r.worker_purges)],
            "gateway_usage_stream_backlog": [({}, b.stream_backlog)],
            "gateway_usage_queue_pending": [({}, self.billing.queue_consumer.pending())],
            "gateway_ledger_batches_total": [({}, b.ledger_batches)],
            "gateway_ledger_records_total": [({}, b.ledger_records)],
            "gateway_ledger_errors_total": [({}, b.ledger_errors)],
            "gateway_stripe_sync_runs_total": [({"result": "ok"}, b.stripe_runs_ok),
                                               ({"result": "failed"}, b.stripe_runs_failed)],
            "gateway_stripe_events_total": [({"result": "sent"}, b.stripe_events_sent),
                                            ({"result": "failed"}, b.stripe_events_failed)],
            "gateway_stripe_last_success_timestamp_seconds": [({}, b.stripe_last_success)],
            "gateway_budget_rejections_total": [({}, sum(s.rejections for s in self.billing.stages
                                                         if isinstance(s, Budgets)))],
        }
        lim = self.limiter.stats
        out["gateway_rate_limit_rejections_total"] = [
            ({"limit": "requests"}, lim.refused_requests), ({"limit": "tokens"}, lim.refused_tokens),
            ({"limit": "concurrency"}, lim.refused_concurrency),
            ({"limit": "store_unavailable"}, lim.refused_unavailable)]
        out["gateway_rate_limit_local_fallbacks_total"] = [({}, lim.local_fallbacks)]
        return out

    async def ready(self) -> dict[str, bool]:
        checks = {"workers": self.pool.has_healthy()}
        if self.state.shared:
            checks["redis"] = await self.state.ping()
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            checks["database"] = True
        except (OSError, ConnectionError, TimeoutError) as exc:
            log.warning("database not reachable: %s", exc)
            checks["database"] = False
        return checks


async def _every(interval: float, job: str, step: object) -> None:
    while True:
        try:
            await step()  # type: ignore[operator]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job %s failed; retrying in %.1fs", job, interval)
        await asyncio.sleep(interval)


def router_config(settings: Settings) -> RouterConfig:
    return RouterConfig(
        policy=settings.routing_policy, block_bytes=settings.routing_block_bytes,
        max_blocks=settings.routing_max_blocks,
        rule=RuleParams(settings.routing_load_factor, settings.routing_load_slack, settings.routing_kv_limit),
        load_cost_tokens=settings.routing_load_cost_tokens, load_cost_share=settings.routing_load_cost_share,
        default_kv_tokens=settings.routing_kv_tokens, bytes_per_token=settings.routing_bytes_per_token,
        feedback_ratio=settings.routing_feedback_ratio,
        inflight_ttl_ms=int(settings.routing_inflight_ttl_s * 1000),
        affinity_ttl_ms=int(settings.routing_affinity_ttl_s * 1000),
        index_ttl_ms=int(settings.routing_index_ttl_s * 1000),
    )


@contextlib.asynccontextmanager
async def build_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    url = settings.sqlalchemy_url
    if settings.auto_migrate:
        await db.upgrade(url)
    engine = db.make_engine(url)
    sessions = db.sessionmaker(engine)
    http = make_session(settings)
    redis = (Redis.from_url(settings.redis_url, socket_connect_timeout=settings.redis_timeout_s)
             if settings.redis_url else None)
    pool = WorkerPool(http)
    for worker_url in settings.workers:
        pool.add(worker_url, "config")
    keys = KeyService(sessions)
    workers = WorkerService(sessions, pool)
    local_state = MemoryState()
    lean = (RespClient(settings.redis_url, reply_timeout=settings.redis_timeout_s)
            if settings.redis_url.startswith("redis://") else None)
    state: StateStore = RedisState(redis, lean) if redis is not None else local_state
    keyspace = KeySpace(settings.redis_prefix)
    limiter = RateLimitStage(keyspace, replicas=settings.replicas,
                             default_max_tokens=settings.limits_default_max_tokens, lease_s=settings.limits_lease_s)
    billing = BillingRuntime.build(settings, BillingService(sessions, settings), engine, keyspace, redis,
                                   local_state)
    router = PrefixRouter(pool, keyspace, local_state, state, router_config(settings))
    rt = Runtime(
        settings=settings, engine=engine, sessions=sessions, http=http, redis=redis, state=state,
        local_state=local_state, keyspace=keyspace, pool=pool, keys=keys,
        key_cache=KeyCache(keys, settings.key_cache_ttl_s), workers=workers,
        forwarder=Forwarder(http, pool, router, stages=[*billing.first_stages, limiter, *billing.stages], state=state,
                            fallback=local_state),
        metrics=GatewayMetrics(pool, org_labels=settings.metrics_org_labels),
        request_log=RequestLog(settings.request_log),
        billing=billing, router=router, limiter=limiter, plans=PlanService(sessions),
    )
    rt.metrics.add_collector(StatsCollector(rt.operational_stats))
    try:
        await workers.sync()
        await pool.check_all()
        await billing.refresh_plans()
        billing.start()
        rt.tasks.append(asyncio.create_task(_every(settings.health_interval_s, "health", pool.check_all)))
        rt.tasks.append(asyncio.create_task(_every(settings.worker_sync_interval_s, "worker-sync", workers.sync)))
        yield rt
    finally:
        for task in rt.tasks:
            task.cancel()
        await asyncio.gather(*rt.tasks, return_exceptions=True)
        await router.drain()
        await billing.close()  # before the engine goes: the ledger writer finishes its batch
        await http.close()
        if redis is not None:
            await redis.aclose()
        if lean is not None:
            await lean.close()
        await engine.dispose()
