"""One upstream worker as the pool and the router know it: where it is, what it serves, how busy it is."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


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
