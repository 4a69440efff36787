"""Every Prometheus metric of the gateway, defined once, and the /metrics exposition.

With several server processes (``gateway serve --processes N``) prometheus-client's multiprocess
mode is used: each ``serve`` invocation gets its own ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary
folder unless one is given), so two gateways on one host never wipe or mix each other's counters.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.observability.cache_share import CacheShareWindow
from gateway.observability.request_tally import RequestTally
from gateway.upstream.provider import PROVIDER_NOTE

if TYPE_CHECKING:
    from gateway.pipeline.exchange import Exchange
    from gateway.routing.pool import WorkerPool

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
TPS_BUCKETS = (1, 5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 500, 1000)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class PoolCollector(Collector):
    """Per-worker health, in-flight requests, queue and KV usage, read from the pool at scrape time."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily("gateway_worker_healthy", "1 if the worker passes health checks",
                                    labels=["worker", "url"])
        misconfigured = GaugeMetricFamily("gateway_worker_misconfigured",
                                          "1 if the worker refused the gateway's credentials (401/403)",
                                          labels=["worker", "url"])
        inflight = GaugeMetricFamily("gateway_worker_inflight_requests",
                                     "Requests this gateway process has in flight at the worker", labels=["worker"])
        waiting = GaugeMetricFamily("gateway_worker_queue_requests",
                                    "The worker's waiting requests (vllm:num_requests_waiting)", labels=["worker"])
        kv = GaugeMetricFamily("gateway_worker_kv_usage_ratio", "The worker's KV cache usage (0..1)",
                               labels=["worker"])
        for w in self._pool.all():
            healthy.add_metric([w.id, w.url], 1.0 if w.healthy else 0.0)
            misconfigured.add_metric([w.id, w.url], 1.0 if w.misconfigured else 0.0)
            inflight.add_metric([w.id], float(w.inflight))
            if "vllm:num_requests_waiting" in w.metrics:
                waiting.add_metric([w.id], w.metrics["vllm:num_requests_waiting"])
            if "vllm:kv_cache_usage_perc" in w.metrics:
                kv.add_metric([w.id], w.metrics["vllm:kv_cache_usage_perc"])
        yield from (healthy, misconfigured, inflight, waiting, kv)


# The model label of requests for a model no worker serves: label values come only from known sets
# (served models, our routes and statuses, org ids), never from what a client typed.
OTHER_MODEL = "other"

# Indices of the request path's metrics in its tally (GatewayMetrics.__init__ lists them in this order).
_REQUESTS, _TOKENS, _OUTCOMES, _DEGRADED = range(4)
_LATENCY, _TTFT, _TPOT, _OUTPUT_TPS, _OVERHEAD, _PROVIDER_LATENCY = range(6)


class GatewayMetrics:
    """The request-path metrics, tallied per request as plain numbers (``request_tally.py``) and handed to
    prometheus-client at each scrape and once a second.

    Every label value is one the gateway knows: a model a worker serves (else ``other``), our route,
    status, outcome and token type names, and org ids only with ``org_labels``."""

    def __init__(self, pool: WorkerPool, org_labels: bool = False, hosted_models: frozenset[str] = frozenset(),
                 cache_window: CacheShareWindow | None = None) -> None:
        self._multiproc = multiprocess_dir()
        self.cache_share = cache_window or CacheShareWindow()  # the per-partner cache SLO (cache_share.py)
        # In multiprocess mode values live in files; the registry here only serves exposition.
        self.registry = CollectorRegistry(auto_describe=True)
        metric_registry = None if self._multiproc else self.registry
        if self._multiproc:
            MultiProcessCollector(self.registry, path=self._multiproc)  # type: ignore[no-untyped-call]
        self.registry.register(PoolCollector(pool))
        self._pool = pool
        self._hosted_models = hosted_models  # models with hosted fallbacks (known label values too)
        self._org_labels = org_labels
        labels = ["model", "route", "status"] + (["org"] if org_labels else [])
        self.requests = Counter("gateway_requests_total", "Requests by model, route and status", labels,
                                registry=metric_registry)
        self.latency = Histogram("gateway_request_duration_seconds", "Total request latency", ["model", "route"],
                                 buckets=LATENCY_BUCKETS, registry=metric_registry)
        self.ttft = Histogram("gateway_time_to_first_token_seconds", "Time to the first byte of the answer",
                              ["model"], buckets=LATENCY_BUCKETS, registry=metric_registry)
        self.tpot = Histogram("gateway_time_per_output_token_seconds", "Decode time per output token",
                              ["model"], buckets=TPOT_BUCKETS, registry=metric_registry)
        self.output_tps = Histogram("gateway_output_tokens_per_second", "Output tokens per second per request",
                                    ["model"], buckets=TPS_BUCKETS, registry=metric_registry)
        self.overhead = Histogram("gateway_overhead_seconds",
                                  "Time the gateway spent before the upstream call (auth, parse, state, choice)",
                                  ["route"], buckets=OVERHEAD_BUCKETS, registry=metric_registry)
        self.tokens = Counter("gateway_tokens_total", "Tokens by model and type "
                              "(input = uncached prompt, cached_input, output, reasoning)", ["model", "type"],
                              registry=metric_registry)
        self.outcomes = Counter("gateway_request_outcomes_total", "Requests by outcome (ok, rejected, "
                                "upstream_error, upstream_cut, client_disconnected)", ["outcome"],
                                registry=metric_registry)
        self.provider_latency = Histogram(
            "gateway_provider_request_duration_seconds", "Requests served through a hosted provider: total latency, "
            "by provider and reason (fallback, overflow)", ["provider", "reason"], buckets=LATENCY_BUCKETS,
            registry=metric_registry)
        self.degraded = Counter("gateway_state_fallbacks_total",
                                "Requests served from local state because Redis was unreachable",
                                registry=metric_registry)
        # The request path's increments and observations, in these orders (the _REQUESTS... indices).
        self._tally = RequestTally([self.requests, self.tokens, self.outcomes, self.degraded],
                                   [self.latency, self.ttft, self.tpot, self.output_tps, self.overhead,
                                    self.provider_latency])

    def model_label(self, model: str) -> str:
        """``model`` if a worker serves it (empty: no model was read), else ``other``."""
        if not model or self._pool.knows_model(model) or model in self._hosted_models:
            return model
        return OTHER_MODEL

    def observe(self, route: str, status: int, model: str, elapsed: float, ex: Exchange | None) -> None:
        tally = self._tally
        model = self.model_label(model)
        labels: tuple[str, ...] = (model, route, str(status))
        if self._org_labels:
            labels = (*labels, ex.principal.org_id if ex is not None else "")
        tally.inc(_REQUESTS, labels)
        tally.observe(_LATENCY, (model, route), elapsed)
        if ex is None:
            return
        tally.inc(_OUTCOMES, (ex.outcome,))
        if ex.degraded:
            tally.inc(_DEGRADED, ())
        hosted = ex.notes.get(PROVIDER_NOTE)
        if hosted is not None:
            tally.observe(_PROVIDER_LATENCY, tuple(hosted), elapsed)
        if ex.upstream_started_at is not None:
            tally.observe(_OVERHEAD, (route,), ex.upstream_started_at - ex.started)
            if ex.first_byte_at is not None:
                tally.observe(_TTFT, (model,), ex.first_byte_at - ex.upstream_started_at)
        usage = ex.usage
        if not usage:
            return
        prompt = int(usage.get("prompt_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached = min(int(details.get("cached_tokens") or 0), prompt)
        output = int(usage.get("completion_tokens") or 0)
        reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        tally.inc(_TOKENS, (model, "input"), prompt - cached)
        tally.inc(_TOKENS, (model, "cached_input"), cached)
        self.cache_share.record(ex.principal.org_id, prompt, cached)
        tally.inc(_TOKENS, (model, "output"), output)
        if reasoning:
            tally.inc(_TOKENS, (model, "reasoning"), reasoning)
        if output > 1 and ex.first_byte_at is not None and ex.finished_at is not None and ex.request.stream:
            decode = ex.finished_at - ex.first_byte_at
            if decode > 0:
                tally.observe(_TPOT, (model,), decode / (output - 1))
                tally.observe(_OUTPUT_TPS, (model,), (output - 1) / decode)

    def flush(self) -> None:
        """Hand what the request path tallied to the metrics (a scrape does it first; multiprocess mode
        also once a second, so that a scrape of another process sees it)."""
        self._tally.flush()

    async def flush_tick(self) -> None:
        self.flush()

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)


class StatsCollector(Collector):
    """Counters that the routing, limit and billing components keep as plain attributes, read at scrape
    time (nothing on the request path). ``read`` returns {name: value}; counters end in ``_total``."""

    _HELP = {
        "gateway_auth_stale_served_total": "Requests admitted on a cached key past its TTL while SQL was unreachable",
        "gateway_auth_unavailable_total": "Requests answered 503: SQL unreachable and the key not cached",
        "gateway_auth_lookup_failures_total": "API-key lookups that failed because SQL was unreachable",
        "gateway_routing_predicted_cached_tokens_total": "Cached prompt tokens the prefix index predicted",
        "gateway_routing_reported_cached_tokens_total": "Cached prompt tokens the workers reported",
        "gateway_routing_prompt_tokens_total": "Prompt tokens of routed requests, as reported",
        "gateway_routing_feedback_corrections_total": "Requests whose worker reported far less cache than predicted",
        "gateway_routing_local_fallbacks_total": "Requests routed on the local index while Redis was unreachable",
        "gateway_routing_worker_purges_total": "Workers whose index entries were dropped (removed, restarted)",
        "gateway_routing_group_spills_total": "Requests routed outside their saturated home worker group",
        "gateway_rate_limit_rejections_total": "Requests refused by a rate limit, by limit",
        "gateway_rate_limit_local_fallbacks_total": "Limit checks answered locally while Redis was unreachable",
        "gateway_rate_limit_leases_renewed_total": "Concurrency leases of long requests extended by the renewal task",
        "gateway_rate_limit_lease_renewal_failures_total": "Lease renewal round trips that failed (store unreachable)",
        "gateway_budget_rejections_total": "Requests refused over a monthly budget (insufficient_quota)",
        "gateway_usage_stream_backlog": "Usage records in the Redis stream not yet in the ledger",
        "gateway_usage_queue_pending": "Usage records queued in process (embedded mode) not yet in the ledger",
        "gateway_ledger_batches_total": "Ledger batches written by this replica",
        "gateway_ledger_records_total": "Usage records inserted into the ledger by this replica",
        "gateway_ledger_errors_total": "Ledger passes that failed (their records stay pending and are retried)",
        "gateway_ledger_dead_letters_total": "Usage records the ledger could not store, moved to the dead letters",
        "gateway_ledger_last_write_timestamp_seconds": "Unix time of this process's last successful ledger pass",
        "gateway_usage_stream_lost_total": "Times Redis lost the usage stream (its epoch changed)",
        "gateway_usage_spool_replayed_records_total": "Spooled usage records appended again after a stream loss",
        "gateway_background_failures_total": "Failures of background jobs, by job (each logged with its traceback)",
        "gateway_stripe_sync_runs_total": "Stripe meter syncs, by result",
        "gateway_provider_requests_total": "Requests a hosted provider was tried for, by provider, reason "
                                           "(fallback, overflow) and result (ok, error, cut)",
        "gateway_provider_errors_total": "Failed hosted-provider tries, by provider and error class",
        "gateway_provider_circuit_opens_total": "Times a hosted provider's circuit opened",
        "gateway_provider_circuit_open": "1 while a hosted provider's circuit is open (it is skipped)",
        "gateway_provider_retry_budget_exhausted_total": "Provider retries refused by the retry budget",
        "gateway_stripe_events_total": "Stripe meter events, by result",
        "gateway_stripe_last_success_timestamp_seconds": "Unix time of the last Stripe sync without failures",
    }

    def __init__(self, read: Callable[[], dict[str, list[tuple[dict[str, str], float]]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        for name, samples in self._read().items():
            labels = sorted({k for sample_labels, _ in samples for k in sample_labels})
            family: Metric
            if name.endswith("_total"):
                family = CounterMetricFamily(name[: -len("_total")], self._HELP.get(name, name), labels=labels)
            else:
                family = GaugeMetricFamily(name, self._HELP.get(name, name), labels=labels)
            for sample_labels, value in samples:
                family.add_metric([sample_labels.get(k, "") for k in labels], value)
            yield family
