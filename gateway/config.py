"""Settings: one typed object, read once from ``GATEWAY_*`` variables and an optional YAML file."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated, Any

import orjson
import platformdirs
import yaml
from pydantic import Field, InstanceOf, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.upstream.fleet_config import (
    FleetConfigError,
    ModelSpec,
    WorkerSpec,
    parse_models,
    parse_workers,
    resolve_tree,
)


class ConfigError(ValueError):
    """Settings that cannot be used; ``str(err)`` is one line naming the source, the path and the reason."""


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the file named by ``GATEWAY_CONFIG`` (if any); environment variables win over it.

    ``os.environ/NAME`` values are read from the environment; ``workers`` and ``models`` are parsed here,
    so that a bad entry is one line naming the file, the path in it and the reason."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("GATEWAY_CONFIG")
        self._data: dict[str, Any] = {}
        if path:
            self._data = _read_file(path, set(settings_cls.model_fields))

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


def _read_file(path: str, fields: set[str]) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}: {where}not valid YAML ({problem})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: must hold a mapping of settings")
    try:
        data = {k: resolve_tree(v, str(k)) for k, v in loaded.items() if k in fields and k not in ("workers", "models")}
        if "workers" in loaded:
            data["workers"] = parse_workers(loaded["workers"])
        if "models" in loaded:
            data["models"] = parse_models(loaded["models"])
    except FleetConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return data


def load_settings() -> Settings:
    """``Settings()``, with every error as one ``ConfigError`` line (for the CLI to print and exit)."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        field = str(first["loc"][0]) if first["loc"] else ""
        env = "GATEWAY_" + field.upper()
        source = (env if env in os.environ or not os.environ.get("GATEWAY_CONFIG")
                  else f"config file {os.environ['GATEWAY_CONFIG']}")
        message = str(first["msg"]).replace("\n", " ")
        raise ConfigError(f"{source}: {where}: {message}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    # Workers: base URLs, e.g. "http://10.0.0.5:8000,http://10.0.0.6:8000" (GATEWAY_WORKERS), or in the
    # config file plain URLs or {url, api_key, headers, models} (gateway/upstream/fleet_config.py).
    workers: Annotated[list[InstanceOf[WorkerSpec]], NoDecode] = Field(default_factory=list)
    # The model catalog (config file only): {name, aliases, fallback, overflow} per served model.
    models: Annotated[list[InstanceOf[ModelSpec]], NoDecode] = Field(default_factory=list)
    upstream_ca_bundle: str = Field(
        default="", description="PEM file of the certificate authorities https:// workers are verified "
                                "against; empty: the system's.")
    upstream_forward_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="More client headers forwarded to workers, comma-separated, beside user-agent and "
                    "x-client-request-id (authorization, x-api-key and cookies never are).")
    upstream_forward_affinity_headers: bool = Field(
        default=False, description="Forward the client's x-session-id and x-grok-conv-id headers to workers.")
    # Empty: in-process state (embedded default). Otherwise a redis:// or rediss:// URL of one Redis, or of
    # any node of a Redis Cluster (found by itself, see redis_cluster).
    redis_url: str = ""
    # "auto": ask the node (INFO cluster) at start; "yes" / "no" to say so (e.g. when Redis may be down at start).
    redis_cluster: str = Field(default="auto", pattern="^(auto|yes|no)$")
    # Empty: SQLite in data_dir. Otherwise e.g. postgresql://user@host/db or sqlite:///path.
    database_url: str = ""
    database_read_url: str = Field(
        default="", description="Where the usage API and the dashboard read usage (a read replica, a role with "
                                "only SELECT); empty: GATEWAY_DATABASE_URL.")
    database_pool_size: int = Field(
        default=10, ge=1, description="PostgreSQL connections each engine keeps (one engine per process, two with "
                                      "GATEWAY_DATABASE_READ_URL); see docs/operations.md for the sums.")
    database_max_overflow: int = Field(
        default=20, ge=0, description="More PostgreSQL connections each engine may open under a burst.")
    database_pgbouncer: bool = Field(
        default=False, description="PostgreSQL is reached through PgBouncer in transaction pool mode: "
                                   "no prepared statement is cached or named (adds pgbouncer=true to both "
                                   "database URLs; a URL may also carry it itself). Not needed in session mode.")
    # The embedded database (and the demo's data): one per user, whatever the working folder
    # (~/.local/share/llm-gateway on Linux, XDG_DATA_HOME respected).
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("llm-gateway", appauthor=False)))
    # Guards /admin. Empty disables the admin API.
    admin_key: str = ""
    # Prefix for every Redis key this gateway writes (tests use one per run).
    redis_prefix: str = "gw"
    # A Redis round trip not answered within this time fails over to local state (never a hang).
    redis_timeout_s: float = 1.0

    host: str = "127.0.0.1"
    port: int = 8080

    max_body_bytes: int = 8 * 1024 * 1024
    # Client connections (gateway/connection_guard.py), per server process.
    client_max_connections: int = Field(
        default=10_000, ge=1,
        description="Open client connections per server process; at the cap a new connection closes the one "
                    "idle the longest, or gets a 503 when all have a request in progress (kept under the "
                    "process's open-file limit at start).")
    client_header_timeout_s: float = Field(
        default=10.0, gt=0,
        description="Seconds a new connection, or a request head split over several packets, has to deliver "
                    "the whole request head; then a 408 and the connection is closed (slow loris).")
    client_body_timeout_s: float = Field(
        default=60.0, gt=0,
        description="Seconds a request body has to arrive after its head; then a 408 and the connection is "
                    "closed.")
    client_keepalive_timeout_s: int = Field(
        default=5, ge=1, description="Seconds an idle keep-alive connection is kept between requests.")
    client_max_header_bytes: int = Field(
        default=32 * 1024, ge=1024,
        description="Bytes of request line and headers at most; a larger head gets a 431.")
    client_max_headers: int = Field(default=100, ge=8,
                                    description="Header fields per request at most; more get a 431.")
    # Seconds a verified API key is trusted without asking SQL again (bounds revocation delay).
    key_cache_ttl_s: float = 3.0
    # While the database is unreachable, a key verified within TTL + this many seconds keeps working from the
    # cache (a key with nothing cached gets 503). Bounds how long a key revoked during an outage lives on.
    key_stale_grace_s: float = Field(default=300.0, ge=0)
    health_interval_s: float = 2.0
    # How often each replica re-reads the workers added through the admin API.
    worker_sync_interval_s: float = 2.0
    upstream_connect_timeout_s: float = 3.0
    # Longest wait for the next bytes from a worker (headers, or the next chunk of a stream).
    upstream_read_timeout_s: float = 600.0
    # A non-streaming request's whole time on a worker (queueing, prefill and decoding).
    upstream_timeout_s: float = Field(default=600.0, gt=0.0)
    # A stream's first chunk must come within this (queueing and prefill); else it is retried elsewhere.
    upstream_ttft_timeout_s: float = Field(default=120.0, gt=0.0)
    # A non-streaming answer larger than this is refused with 502 instead of being held in memory.
    upstream_max_response_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    upstream_max_connections: int = 1000
    # Hosted providers (the models' `fallback:` lists, called through litellm; docs/providers.md).
    provider_timeout_s: float = Field(
        default=60.0, gt=0,
        description="Seconds a hosted provider has for a whole answer, or between two chunks of a stream (a "
                    "provider's own `timeout:` in the config file wins); then the next provider is tried or 504.")
    provider_breaker_failures: int = Field(
        default=5, ge=1,
        description="Consecutive failures that open a provider's circuit: it is skipped until the cooldown ends.")
    provider_breaker_cooldown_s: float = Field(
        default=30.0, gt=0,
        description="Seconds an open provider circuit stays open; then one probe request decides (half-open).")
    provider_retry_ratio: float = Field(
        default=0.2, ge=0, le=1,
        description="Retry budget: a failed provider call moves to the next provider only while retries stay "
                    "within this share of provider requests (plus a reserve of 10).")
    providers_default_allowed: bool = Field(
        default=True,
        description="Whether an organisation's traffic may go to hosted providers when its own setting says "
                    "nothing (each organisation can allow or forbid it: `gateway orgs providers`).")
    overflow_waiting_requests: int = Field(
        default=8, ge=1,
        description="A worker counts as saturated for overflow when its scraped queue "
                    "(vllm:num_requests_waiting) holds at least this many requests.")
    auto_migrate: bool = True
    # One JSON line per request on the "gateway.requests" logger (never a key or a prompt).
    request_log: bool = True
    # The cyclic garbage collector's first-generation threshold in the server and the standalone ledger
    # writer (Python's own is 700; gateway/collector.py). Under load young collections find next to no
    # garbage but traverse every request in flight; at this threshold they nearly stop, while a cycle of
    # garbage is still collected within this many net allocations.
    gc_threshold: int = Field(default=20_000, ge=100, le=10_000_000)
    # Label request metrics by organisation (only where the number of organisations is bounded).
    metrics_org_labels: bool = False
    # The per-partner cache SLO: cached share of prompt tokens over this sliding window (gauges at /metrics).
    cache_slo_window_s: float = Field(default=3600.0, gt=0.0)
    cache_slo_top_n: int = Field(default=10, ge=0)  # without org labels: the share of the N largest partners
    cache_slo_min_prompt_tokens: int = Field(default=100_000, ge=0)  # below this in the window: not judged
    cache_slo_refresh_s: float = Field(default=60.0, gt=0.0)  # how often the plans' SLOs are read from SQL
    metrics_token: str = Field(
        default="", description="When set, /metrics answers only 'Authorization: Bearer <token>' (401 otherwise).")
    metrics_address: str = Field(
        default="", description="host:port of a second listener, in each server process, serving only /metrics "
                                "(then the main port answers 404 there); empty: /metrics on the main port.")
    # Rate limits. Expected number of gateway replicas: while Redis is unreachable, each replica of a
    # fail-open organisation enforces limit / replicas on its own.
    replicas: int = Field(default=1, ge=1)
    # Output tokens reserved for a request without max_tokens / max_completion_tokens (settled later).
    limits_default_max_tokens: int = Field(default=1024, ge=0)
    # A concurrency slot is released when the request ends, or this long after its replica died: each replica
    # renews the leases of its requests in flight every limits_lease_s / 3 (one round trip for all of them).
    limits_lease_s: float = Field(default=30.0, gt=0)


    # Billing: usage records go to the ledger (off only to measure what metering costs).
    metering_enabled: bool = True
    ledger_batch_size: int = 2000
    # Stream consumers per replica (each a member of the ledger group; two overlap Redis and SQL waits).
    # 0: this replica writes no ledger batches; run `gateway billing writer` as its own process instead.
    ledger_writers: int = 2
    # `gateway billing writer` lowers its CPU priority by this much (os.nice) before it starts: its batches
    # are bursts of CPU that can wait, and on a host it shares with Redis or gateway processes they
    # otherwise run ahead of requests in flight (0: leave it).
    ledger_writer_nice: int = Field(default=10, ge=0, le=19)
    # The usage stream is this many streams, hash-tagged apart (one slot each on Redis Cluster); a record
    # goes to the shard its request id hashes to; every replica's consumers read every shard.
    usage_stream_shards: int = Field(default=1, ge=1, le=64)
    # How long the ledger writer waits when nothing arrived (embedded queue, Redis stream block).
    ledger_flush_interval_s: float = 0.5
    # Records this replica appended to the usage stream in the last this many seconds (at most
    # ledger_spool_max) are appended again if Redis loses the stream (the ledger drops repeats).
    ledger_spool_s: float = Field(default=300.0, ge=0.0)
    ledger_spool_max: int = Field(default=100_000, ge=1)
    ledger_partitions_ahead: int = Field(
        default=2, ge=0,
        description="PostgreSQL: months of usage_ledger partitions the ledger writers keep created ahead of "
                    "the current one (checked hourly; `gateway db partitions ensure` does it at once).")
    ledger_retention_months: int = Field(
        default=0, ge=0,
        description="PostgreSQL: drop a month's usage_ledger partition once the month ended more than this many "
                    "months before the current one and its hourly rollups match its rows (with Stripe on: "
                    "and every row was sent); 0 keeps every month.")
    # How often each replica re-reads price plans (budgets follow the key cache TTL).
    billing_refresh_interval_s: float = 5.0
    # Output tokens a budget reservation assumes when the request sets no max_tokens.
    budget_default_output_tokens: int = 4096
    # A reservation never settled (its replica died) is released after this long.
    budget_reservation_ttl_s: float = 900.0
    # Stripe: empty key disables the sync. The base URL points the SDK elsewhere (the local test server).
    # YAML file of list prices per served model, USD per million tokens: {models: {NAME: {input: "0.20",
    # cached: "0.02", output: "1.50"}}}; models it does not name keep the built-in reference prices.
    price_book_file: str = ""
    stripe_api_key: str = ""
    stripe_api_base: str = ""
    stripe_sync_interval_s: float = 300.0
    # Meter event names of the three Stripe meters (uncached input, cached input, output tokens).
    stripe_meter_input: str = "gateway_input_tokens"
    stripe_meter_cached: str = "gateway_cached_input_tokens"
    stripe_meter_output: str = "gateway_output_tokens"
    # Calls per second to Stripe (test mode allows 25 in all).
    stripe_max_calls_per_s: float = 20.0
    # A usage window is sent once it closed this long ago (late records go in a later event).
    stripe_window_s: int = 3600
    stripe_settle_delay_s: float = 60.0

    # Routing (see docs/routing.md): prefix_aware, least_loaded, session_hash or round_robin.
    routing_policy: str = "prefix_aware"
    routing_block_bytes: int = Field(default=512, ge=16)  # canonical prompt bytes per hashed block
    routing_max_blocks: int = Field(default=1024, ge=1, le=4096)  # leading blocks considered at most
    routing_load_factor: float = Field(default=2.0, ge=1.0)  # bounded load: at most this x mean (+1)
    routing_load_slack: float = Field(default=2.0, ge=0.0)  # ... or the least loaded worker + this
    # The slack of that bound for the worker a conversation (hint or inferred session) is bound to: it
    # stays there unless the worker passes max(load_factor x mean, least + this); empty: the load slack.
    routing_affinity_slack: float | None = Field(default=4.0, ge=0.0)
    routing_kv_limit: float = Field(default=0.95, gt=0.0)  # skip workers whose KV usage is above this
    # First placement by recent work: every routed request adds the blocks it is predicted to prefill to
    # its worker's recent work, which halves every this many seconds, and a request opening a new
    # conversation counts routing_work_weight x each worker's recent work (blocks) in its cost; 0: off.
    # (At most a day: the work counters expire after 16 half-lives, which Redis must accept; a weight is
    # finite: an infinite one times no work is NaN, which no cost compares below.)
    routing_work_halflife_s: float = Field(default=60.0, ge=0.0, le=86_400.0)
    routing_work_weight: float = Field(default=0.25, ge=0.0, allow_inf_nan=False)
    # Prompt tokens of prefill one request in flight is worth (cost = unmatched blocks + this x load);
    # 0: adaptive, routing_load_cost_share x the running mean prompt length.
    routing_load_cost_tokens: float = Field(default=0.0, ge=0.0)
    routing_load_cost_share: float = Field(default=0.2, gt=0.0)
    # KV capacity (tokens) of a worker that does not report vllm:cache_config_info.
    routing_kv_tokens: int = Field(default=500_000, ge=1)
    # Canonical bytes per token, to size the index from KV tokens; 0: measured from the responses.
    routing_bytes_per_token: float = Field(default=4.0, ge=0.0)
    # Drop a worker's stale entries when it reports fewer cached tokens than this x predicted.
    routing_feedback_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    routing_inflight_ttl_s: float = Field(default=300.0, gt=0.0)  # a lost request stops counting after this
    routing_affinity_ttl_s: float = Field(default=1800.0, gt=0.0)  # a conversation hint's binding lives this long
    routing_index_ttl_s: float = Field(default=86_400.0, gt=0.0)  # an idle worker's index expires after this
    # A matched prefix last scored less than this ago is not written again (only the request's new blocks).
    routing_index_refresh_s: float = Field(default=1.0, ge=0.0, le=86_400.0)  # at most the index's own TTL
    # Stored responses (POST /v1/responses, store=true): kept this long in Redis (or in process when
    # embedded, within responses_local_max_bytes, least recently used dropped first).
    responses_retention_s: float = Field(default=2_592_000.0, gt=0.0)  # 30 days, as OpenAI keeps them
    responses_local_max_bytes: int = Field(default=268_435_456, ge=0)  # 256 MiB
    responses_max_chain: int = Field(default=1000, ge=1)  # previous_response_id links followed at most
    routing_explain: bool = False  # POST /admin/routing/explain (admin key): off unless set
    routing_infer_sessions: bool = True  # no hint: a chat conversation is known by its opening messages
    # Worker groups (own Redis hash tag each) a model's routing state is split over: 1 = one slot per model.
    routing_groups: int = Field(default=1, ge=1, le=256)

    @field_validator("routing_policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        allowed = ("prefix_aware", "least_loaded", "session_hash", "round_robin")  # routing.policies.POLICY_NAMES
        if value not in allowed:
            raise ValueError(f"routing_policy must be one of {', '.join(allowed)}")
        return value

    @field_validator("routing_affinity_slack", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # an empty variable: unset

    @field_validator("workers", mode="before")
    @classmethod
    def _split_workers(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            # A JSON array is accepted too.
            value = orjson.loads(text) if text.startswith("[") else [w.strip() for w in text.split(",") if w.strip()]
        return parse_workers(value)

    @field_validator("upstream_ca_bundle")
    @classmethod
    def _check_bundle(cls, value: str) -> str:
        if value:
            try:
                ssl.create_default_context(cafile=value)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"the CA bundle {value} cannot be loaded ({exc})") from None
        return value

    @field_validator("upstream_forward_headers", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        if isinstance(value, str):  # GATEWAY_MODELS: a JSON array (the config file is the usual place)
            value = orjson.loads(value) if value.strip() else []
        return parse_models(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @property
    def sqlalchemy_url(self) -> str:
        """The async driver URL for SQLAlchemy (asyncpg or aiosqlite)."""
        return self._driver_url(self.database_url)

    @property
    def sqlalchemy_read_url(self) -> str:
        """The driver URL the usage reads use: the read-only URL, else the main one."""
        return self._driver_url(self.database_read_url or self.database_url)

    def _driver_url(self, url: str) -> str:
        if not url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'gateway.db').resolve()}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                url = driver + url[len(plain):]
                break
        if not url.startswith("postgresql"):
            return url
        # Engine options ride on the URL (read and removed by gateway/db/connect_options.py), so every process
        # and the migrations get them; those already on the URL win, defaults are left out.
        extra = [f"{name}={value}" for name, value, default in (
            ("pool_size", self.database_pool_size, 10), ("max_overflow", self.database_max_overflow, 20),
            ("pgbouncer", "true" if self.database_pgbouncer else "", "")) if value != default and f"{name}=" not in url]
        return url + ("&" if "?" in url else "?") + "&".join(extra) if extra else url
