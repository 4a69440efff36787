"""One upstream worker as the pool and the router know it: where it is, what it serves, how busy it is,
and what it is sent (its key and extra headers, for that worker only)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

HEALTHY = "healthy"
DOWN = "down"
MISCONFIGURED = "misconfigured"  # it answered 401/403: its key or headers are wrong, not its health


class WorkerSettings(Protocol):
    """What the configuration says of one worker (``gateway.upstream.fleet_config.WorkerSpec``)."""

    @property
    def url(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def models(self) -> tuple[str, ...]: ...
    @property
    def api_key_ref(self) -> str | None: ...


def worker_id_for(url: str) -> str:
    """Stable across replicas and restarts, so shared state can name a worker."""
    return "w-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def send_headers(spec: WorkerSettings) -> Mapping[str, str]:
    """What every call to this worker carries: its extra headers, then ``Authorization: Bearer <key>``."""
    out = dict(spec.headers)
    if spec.api_key is not None:
        out["Authorization"] = "Bearer " + spec.api_key
    return out


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
    # Sent on health checks, scrapes and requests to this worker only (holds its key: never shown).
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Models given in the config; empty: what its /v1/models lists.
    pinned_models: frozenset[str] = frozenset()
    # It answered 401/403: out of rotation, logged at error level once, until a check with its key passes.
    misconfigured: bool = False
    # What the configuration says about its key: "os.environ/NAME", "set" (a literal in the file) or None.
    key_source: str | None = None
    header_names: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, wid: str, spec: WorkerSettings, source: str) -> Worker:
        worker = cls(id=wid, url=spec.url, source=source)
        worker.configure(spec)
        return worker

    def configure(self, spec: WorkerSettings) -> bool:
        """Take the spec's key, headers and models; True when something changed."""
        headers = send_headers(spec)
        pinned = frozenset(spec.models)
        key_source = spec.api_key_ref or ("set" if spec.api_key is not None else None)
        changed = (dict(headers) != dict(self.headers) or pinned != self.pinned_models
                   or key_source != self.key_source)
        self.headers = headers
        self.pinned_models = pinned
        self.key_source = key_source
        self.header_names = tuple(sorted(spec.headers))
        if pinned:
            self.models = pinned
        return changed

    @property
    def state(self) -> str:
        if self.misconfigured:
            return MISCONFIGURED
        return HEALTHY if self.healthy else DOWN

    def describe(self) -> dict[str, object]:
        """What the admin API and the CLI show: never the key or a header's value."""
        return {
            "id": self.id,
            "url": self.url,
            "source": self.source,
            "healthy": self.healthy,
            "state": self.state,
            "models": sorted(self.models),
            "inflight": self.inflight,
            "last_error": self.last_error,
            "api_key": self.key_source,
            "headers": list(self.header_names),
        }
