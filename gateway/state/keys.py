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
