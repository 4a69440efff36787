"""Every Redis key name the gateway uses, in one place.

Names carry a hash tag (the part in braces) so that the keys one script touches land in the same
Redis Cluster slot. The prefix (``GATEWAY_REDIS_PREFIX``) separates deployments and test runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeySpace:
    prefix: str = "gw"

    def probe(self) -> str:
        """A key used only to check reachability."""
        return f"{self.prefix}:{{probe}}"

    # --- prefix-aware routing: every key of one model shares the hash tag {rt:MODEL} -------------
    def route_tag(self, model: str) -> str:
        safe = model.replace("{", "(").replace("}", ")")
        return f"{self.prefix}:{{rt:{safe}}}"

    def routing_prefix(self) -> str:
        """What every routing key starts with (to clear the local fallback's routing state)."""
        return f"{self.prefix}:{{rt:"

    def prefix_index(self, model: str, worker_id: str) -> str:
        """ZSET: block hash (8 raw bytes) -> last use (ms x 4096 + position order), one per worker."""
        return f"{self.route_tag(model)}:idx:{worker_id}"

    def inflight(self, model: str, worker_id: str) -> str:
        """ZSET: request id -> deadline (ms); the worker's requests in flight from every replica."""
        return f"{self.route_tag(model)}:inf:{worker_id}"

    def affinity(self, model: str, hint: str) -> str:
        """STRING: the worker a conversation hint (hashed with the tenant) was last routed to."""
        return f"{self.route_tag(model)}:aff:{hint}"
