"""What the app's lifespan builds and hands to the API: clients, stores and services, in one object."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.auth import KeyCache
from gateway.background import TaskFailures, every
from gateway.config import Settings
from gateway.db import engine as db
from gateway.front.responses import ResponsesStage
from gateway.front.responses_store import ResponseStore
from gateway.limits.limit_stage import RateLimitStage
from gateway.metering.tasks import MeteringTasks
from gateway.observability.cache_share import CacheShareCollector, CacheShareWindow
from gateway.observability.prometheus import GatewayMetrics, StatsCollector
from gateway.observability.requestlog import RequestLog
from gateway.pipeline.contract import Stage
from gateway.proxy.forward import Forwarder
from gateway.proxy.relay import Relay
from gateway.routing.catalog import ModelCatalog
from gateway.routing.choose import RuleParams
from gateway.routing.pool import WorkerPool
from gateway.routing.router import PrefixRouter, RouterConfig
from gateway.services.billing import BillingService
from gateway.services.keys import KeyService
from gateway.services.plans import PlanService
from gateway.services.workers import WorkerService
from gateway.state.base import StateStore, StoreUnavailable
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.state.redis_clients import AnyRedis, is_cluster, lean_client, redis_client
from gateway.upstream.fleet_config import alias_table
from gateway.upstream.openai_worker import OpenAIWorkers, make_pool
from gateway.upstream.provider import HostedProviders
from gateway.upstream.provider_fleet import ProviderFleet
from gateway.upstream.worker_probe import WorkerProbe

log = logging.getLogger("gateway")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    probe: WorkerProbe
    redis: AnyRedis | None
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
    billing: MeteringTasks
    router: PrefixRouter
    limiter: RateLimitStage
    plans: PlanService
    catalog: ModelCatalog
    # The usage API's reads (GATEWAY_DATABASE_READ_URL: a replica, a SELECT-only role); else ``sessions``.
    usage_sessions: async_sessionmaker[AsyncSession]
    responses: ResponseStore
    usage_engine: AsyncEngine | None = None  # its own engine, when a read URL is set
    providers: ProviderFleet | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    failures: TaskFailures = field(default_factory=TaskFailures)

    def operational_stats(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """What the components count as plain attributes, for the metrics collector (scrape time only)."""
        r, led, st, auth = self.router.stats, self.billing.ledger, self.billing.stripe, self.key_cache.stats
        out: dict[str, list[tuple[dict[str, str], float]]] = {
            "gateway_auth_stale_served_total": [({}, auth.stale_served)],
            "gateway_auth_unavailable_total": [({}, auth.unavailable)],
            "gateway_auth_lookup_failures_total": [({}, auth.lookup_failures)],
            "gateway_routing_predicted_cached_tokens_total": [({}, r.predicted_cached_tokens)],
            "gateway_routing_reported_cached_tokens_total": [({}, r.reported_cached_tokens)],
            "gateway_routing_prompt_tokens_total": [({}, r.prompt_tokens)],
            "gateway_routing_feedback_corrections_total": [({}, r.feedback_corrections)],
            "gateway_routing_local_fallbacks_total": [({}, r.local_fallbacks)],
            "gateway_routing_worker_purges_total": [({}, r.worker_purges)],
            "gateway_routing_group_spills_total": [({}, r.group_spills)],
            "gateway_usage_stream_backlog": [({}, led.backlog)],
            "gateway_usage_queue_pending": [({}, self.billing.queue_consumer.pending())],
            "gateway_ledger_batches_total": [({}, led.batches)],
            "gateway_ledger_records_total": [({}, led.records)],
            "gateway_ledger_errors_total": [({}, led.errors)],
            "gateway_ledger_dead_letters_total": [({}, led.dead_letters)],
            "gateway_ledger_last_write_timestamp_seconds": [({}, led.last_write)],
            "gateway_usage_stream_lost_total": [({}, led.groups_recreated)],
            "gateway_usage_spool_replayed_records_total": [({}, led.spool_records)],
            "gateway_background_failures_total": [({"job": job}, n) for job, n in
                                                  {**self.billing.failures.counts, **self.failures.counts}.items()],
            "gateway_stripe_sync_runs_total": [({"result": "ok"}, st.runs_ok), ({"result": "failed"}, st.runs_failed)],
            "gateway_stripe_events_total": [({"result": "sent"}, st.events_sent),
                                            ({"result": "failed"}, st.events_failed)],
            "gateway_stripe_last_success_timestamp_seconds": [({}, st.last_success)],
            "gateway_budget_rejections_total": [({}, self.billing.budgets.rejections if self.billing.budgets else 0)],
        }
        lim = self.limiter.stats
        out["gateway_rate_limit_rejections_total"] = [
            ({"limit": "requests"}, lim.refused_requests), ({"limit": "tokens"}, lim.refused_tokens),
            ({"limit": "concurrency"}, lim.refused_concurrency),
            ({"limit": "store_unavailable"}, lim.refused_unavailable)]
        out["gateway_rate_limit_local_fallbacks_total"] = [({}, lim.local_fallbacks)]
        out["gateway_rate_limit_leases_renewed_total"] = [({}, lim.leases_renewed)]
        out["gateway_rate_limit_lease_renewal_failures_total"] = [({}, lim.lease_renewal_failures)]
        if self.providers is not None:
            out.update(self.providers.stats())
        return out

    async def refresh_cache_slos(self) -> None:
        """Each organisation's cache SLO (its plan's) for the cache SLO gauges, off the request path."""
        self.metrics.cache_share.slos = await self.plans.cache_slos()

    async def readiness(self) -> tuple[int, dict[str, object]]:
        """``GET /ready``'s status and body: 200 when every check passes, else 503."""
        checks = await self.ready()
        ok = all(checks.values())
        return (200 if ok else 503), {"status": "ready" if ok else "not ready", "checks": checks}

    async def ready(self) -> dict[str, bool]:
        # With hosted fallbacks the replica serves while the whole fleet is down.
        checks = {"workers": self.pool.has_healthy() or self.providers is not None}
        if self.state.shared:
            checks["redis"] = await self.state.ping()
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            checks["database"] = True
        except db.DB_ERRORS as exc:
            if not db.unreachable(exc):
                raise
            log.warning("database not reachable: %s", db.describe(exc))
            checks["database"] = False
        return checks


def router_config(settings: Settings) -> RouterConfig:
    return RouterConfig(
        policy=settings.routing_policy, block_bytes=settings.routing_block_bytes,
        max_blocks=settings.routing_max_blocks,
        rule=RuleParams(settings.routing_load_factor, settings.routing_load_slack, settings.routing_kv_limit,
                        affinity_slack=settings.routing_affinity_slack, work_weight=settings.routing_work_weight),
        load_cost_tokens=settings.routing_load_cost_tokens, load_cost_share=settings.routing_load_cost_share,
        default_kv_tokens=settings.routing_kv_tokens, bytes_per_token=settings.routing_bytes_per_token,
        feedback_ratio=settings.routing_feedback_ratio,
        inflight_ttl_ms=int(settings.routing_inflight_ttl_s * 1000),
        affinity_ttl_ms=int(settings.routing_affinity_ttl_s * 1000),
        index_ttl_ms=int(settings.routing_index_ttl_s * 1000),
        index_refresh_ms=int(settings.routing_index_refresh_s * 1000),
        infer_sessions=settings.routing_infer_sessions, groups=settings.routing_groups,
        work_halflife_ms=int(settings.routing_work_halflife_s * 1000),
    )


def provider_fleet(settings: Settings) -> ProviderFleet | None:
    """The hosted providers of the models' ``fallback:`` lists (None when no model has any): litellm itself
    is only imported on the first request that goes to one."""
    if not any(m.fallback for m in settings.models):
        return None
    if importlib.util.find_spec("litellm") is None:  # found without importing it
        raise RuntimeError("models with a fallback: list need litellm: pip install 'llm-gateway[litellm]'")
    return ProviderFleet(settings.models, HostedProviders(settings.provider_timeout_s),
                         breaker_failures=settings.provider_breaker_failures,
                         breaker_cooldown_s=settings.provider_breaker_cooldown_s,
                         retry_ratio=settings.provider_retry_ratio, default_allowed=settings.providers_default_allowed,
                         overflow_waiting=settings.overflow_waiting_requests)


def stage_order(billing: MeteringTasks, limiter: RateLimitStage,
                responses: ResponsesStage | None = None) -> list[Stage]:
    """Every stage of the request path, in the one order they run (plan, admit, finish).

    Metering comes first so that it settles every request, also one a later stage refused (refusals are
    counted); then the rate limits; then the spend caps, so a request a limit refused reserves no budget;
    last the stored responses, which keep the cost metering settled.
    """
    stages: list[Stage | None] = [billing.metering, limiter, billing.budgets, responses]
    return [s for s in stages if s is not None]


@contextlib.asynccontextmanager
async def build_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    url = settings.sqlalchemy_url
    if settings.auto_migrate:
        await db.upgrade(url)  # Alembic only runs when the schema is not at the head already
    else:
        await db.require_current(url)
    engine = db.make_engine(url)
    sessions = db.sessionmaker(engine)
    usage_engine = db.make_engine(settings.sqlalchemy_read_url) if settings.database_read_url else None
    probe = WorkerProbe.build(settings)  # health checks and metrics scrapes
    worker_http = make_pool(settings)
    cluster = bool(settings.redis_url) and await is_cluster(settings.redis_url, settings.redis_cluster,
                                                            settings.redis_timeout_s)
    redis = redis_client(settings.redis_url, cluster, settings.redis_timeout_s) if settings.redis_url else None
    pool = WorkerPool(probe)
    for spec in settings.workers:
        pool.add(spec, "config")
    keys = KeyService(sessions)
    workers = WorkerService(sessions, pool)
    local_state = MemoryState()
    lean = lean_client(settings.redis_url, cluster, settings.redis_timeout_s) if redis is not None else None
    state: StateStore = RedisState(redis, lean) if redis is not None else local_state
    keyspace = KeySpace(settings.redis_prefix)
    limiter = RateLimitStage(keyspace, replicas=settings.replicas,
                             default_max_tokens=settings.limits_default_max_tokens, lease_s=settings.limits_lease_s)
    billing = MeteringTasks.build(settings, BillingService(sessions, settings), engine, keyspace, redis,
                                   local_state)
    router = PrefixRouter(pool, keyspace, local_state, state, router_config(settings))
    providers = provider_fleet(settings)
    responses = ResponseStore(state, local_state, keyspace, settings.responses_retention_s,
                              settings.responses_local_max_bytes, settings.responses_max_chain)
    rt = Runtime(
        settings=settings, engine=engine, sessions=sessions, probe=probe, redis=redis, state=state,
        local_state=local_state, keyspace=keyspace, pool=pool, keys=keys,
        key_cache=KeyCache(keys, settings.key_cache_ttl_s, settings.key_stale_grace_s), workers=workers,
        forwarder=Forwarder(OpenAIWorkers(worker_http, settings),
                            Relay(settings.upstream_max_response_bytes, settings.upstream_ttft_timeout_s),
                            pool, router, stages=stage_order(billing, limiter, ResponsesStage(responses)), state=state,
                            fallback=local_state, providers=providers),
        metrics=GatewayMetrics(pool, org_labels=settings.metrics_org_labels,
                               hosted_models=providers.models() if providers is not None else frozenset(),
                               cache_window=CacheShareWindow(settings.cache_slo_window_s)),
        request_log=RequestLog(settings.request_log),
        billing=billing, router=router, limiter=limiter, plans=PlanService(sessions),
        catalog=ModelCatalog(alias_table(settings.models), (m.name for m in settings.models if m.fallback)),
        usage_sessions=db.sessionmaker(usage_engine) if usage_engine is not None else sessions,
        usage_engine=usage_engine, providers=providers, responses=responses,
    )
    rt.metrics.add_collector(StatsCollector(rt.operational_stats))
    rt.metrics.add_collector(CacheShareCollector(rt.metrics.cache_share, settings.metrics_org_labels,
                                                 settings.cache_slo_top_n, settings.cache_slo_min_prompt_tokens))
    rt.failures.expected = billing.failures.expected = (*db.DB_ERRORS, RedisError, StoreUnavailable)
    try:
        await workers.sync()
        await pool.check_all()
        await billing.refresh_plans()
        billing.start()
        # Both just ran: their loops start one interval on (not beside the first requests).
        rt.tasks.append(asyncio.create_task(every(settings.health_interval_s, "health", pool.check_all, rt.stopping,
                                                  rt.failures, first_after=settings.health_interval_s)))
        sync_s = settings.worker_sync_interval_s
        rt.tasks.append(asyncio.create_task(every(sync_s, "worker-sync", workers.sync, rt.stopping, rt.failures,
                                                  first_after=sync_s)))
        rt.tasks.append(asyncio.create_task(every(settings.cache_slo_refresh_s, "cache-slos", rt.refresh_cache_slos,
                                                  rt.stopping, rt.failures)))
        rt.tasks.append(asyncio.create_task(every(1.0, "settle-later", rt.forwarder.settle_later, rt.stopping,
                                                  rt.failures)))
        rt.tasks.append(asyncio.create_task(every(1.0, "metrics-flush", rt.metrics.flush_tick, rt.stopping,
                                                  rt.failures)))
        rt.tasks.append(asyncio.create_task(every(limiter.renew_interval_s, "lease-renewal",
                                                  functools.partial(limiter.renew_leases, state, local_state),
                                                  rt.stopping, rt.failures)))
        yield rt
    finally:
        rt.stopping.set()
        for task in rt.tasks:
            task.cancel()
        rt.metrics.flush()
        await asyncio.gather(*rt.tasks, return_exceptions=True)
        await router.drain()
        await billing.close()  # before the engine goes: the ledger writer finishes its batch
        probe.close()
        worker_http.close()
        if redis is not None:
            await redis.aclose()
        if lean is not None:
            await lean.close()
        await engine.dispose()
        if usage_engine is not None:
            await usage_engine.dispose()
