"""Settings: one typed object, read once from ``GATEWAY_*`` variables and an optional YAML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import orjson
import platformdirs
import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the file named by ``GATEWAY_CONFIG`` (if any); environment variables win over it."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("GATEWAY_CONFIG")
        self._data: dict[str, Any] = {}
        if path:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"config file {path} must hold a mapping")
            self._data = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    # Worker base URLs, e.g. "http://10.0.0.5:8000,http://10.0.0.6:8000".
    workers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Empty: in-process state (embedded default). Otherwise a redis:// URL.
    redis_url: str = ""
    # Empty: SQLite in data_dir. Otherwise e.g. postgresql://user@host/db or sqlite:///path.
    database_url: str = ""
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
    auto_migrate: bool = True
    # One JSON line per request on the "gateway.requests" logger (never a key or a prompt).
    request_log: bool = True
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
    # How long the ledger writer waits when nothing arrived (embedded queue, Redis stream block).
    ledger_flush_interval_s: float = 0.5
    # Records this replica appended to the usage stream in the last this many seconds (at most
    # ledger_spool_max) are appended again if Redis loses the stream (the ledger drops repeats).
    ledger_spool_s: float = Field(default=300.0, ge=0.0)
    ledger_spool_max: int = Field(default=100_000, ge=1)
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
    routing_kv_limit: float = Field(default=0.95, gt=0.0)  # skip workers whose KV usage is above this
    # Prompt tokens of prefill one request in flight is worth (cost = unmatched blocks + this x load);
    # 0: adaptive, routing_load_cost_share x the running mean prompt length.
    routing_load_cost_tokens: float = Field(default=0.0, ge=0.0)
    routing_load_cost_share: float = Field(default=0.2, gt=0.0)
    # KV capacity (tokens) of a worker that does not report vllm:cache_config_info.
    routing_kv_tokens: int = Field(default=500_000, ge=1)
    routing_bytes_per_token: float = Field(default=4.0, gt=0.0)  # to size the index from KV tokens
    # Drop a worker's stale entries when it reports fewer cached tokens than this x predicted.
    routing_feedback_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    routing_inflight_ttl_s: float = Field(default=300.0, gt=0.0)  # a lost request stops counting after this
    routing_affinity_ttl_s: float = Field(default=1800.0, gt=0.0)  # a conversation hint's binding lives this long
    routing_index_ttl_s: float = Field(default=86_400.0, gt=0.0)  # an idle worker's index expires after this
    routing_explain: bool = False  # POST /admin/routing/explain (admin key): off unless set
    routing_infer_sessions: bool = True  # no hint: a chat conversation is known by its opening messages

    @field_validator("routing_policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        allowed = ("prefix_aware", "least_loaded", "session_hash", "round_robin")  # routing.policies.POLICY_NAMES
        if value not in allowed:
            raise ValueError(f"routing_policy must be one of {', '.join(allowed)}")
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _split_workers(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):  # a JSON array is accepted too
                return [str(w).strip().rstrip("/") for w in orjson.loads(text)]
            return [w.strip().rstrip("/") for w in text.split(",") if w.strip()]
        return value

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
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'gateway.db').resolve()}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain):]
        return url
