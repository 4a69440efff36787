"""Settings: one typed object, read once from ``GATEWAY_*`` variables and an optional YAML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


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
    workers: list[str] = Field(default_factory=list)
    # Empty: in-process state (embedded default). Otherwise a redis:// URL.
    redis_url: str = ""
    # Empty: SQLite in data_dir. Otherwise e.g. postgresql://user@host/db or sqlite:///path.
    database_url: str = ""
    data_dir: Path = Path(".gateway")
    # Guards /admin. Empty disables the admin API.
    admin_key: str = ""
    # Prefix for every Redis key this gateway writes (tests use one per run).
    redis_prefix: str = "gw"

    host: str = "127.0.0.1"
    port: int = 8080

    max_body_bytes: int = 8 * 1024 * 1024
    # Seconds a verified API key is trusted without asking SQL again (bounds revocation delay).
    key_cache_ttl_s: float = 3.0
    health_interval_s: float = 2.0
    # How often each replica re-reads the workers added through the admin API.
    worker_sync_interval_s: float = 2.0
    upstream_connect_timeout_s: float = 3.0
    # Time allowed until the worker's response headers arrive (covers queueing and prefill).
    upstream_read_timeout_s: float = 600.0
    upstream_max_connections: int = 1000
    auto_migrate: bool = True

    # Routing (see README "Routing"): prefix_aware, least_loaded, session_hash or round_robin.
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

    @field_validator("routing_policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        allowed = ("prefix_aware", "least_loaded", "session_hash", "round_robin")
        if value not in allowed:
            raise ValueError(f"routing_policy must be one of {', '.join(allowed)}")
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _split_workers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [w.strip().rstrip("/") for w in value.split(",") if w.strip()]
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
