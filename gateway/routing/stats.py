"""Routing counters, kept as plain attributes until the metrics issue exports them to Prometheus."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class RoutingStats:
    requests: int = 0  # requests routed (first attempts)
    settled: int = 0  # requests whose post-request round trip completed
    prefix_hits: int = 0  # routed to a worker believed to hold at least one block of the prompt
    affinity_hits: int = 0  # kept on the worker of their conversation hint
    retries: int = 0  # second attempts, chosen locally without a shared in-flight reservation
    local_fallbacks: int = 0  # requests routed on this replica's local index because Redis was unreachable
    degraded: bool = False  # routing on the local index right now
    prompt_tokens: int = 0  # as the workers reported
    predicted_cached_tokens: int = 0  # what the index predicted for the worker that served
    reported_cached_tokens: int = 0  # what that worker reported
    feedback_corrections: int = 0  # requests whose worker reported far less than predicted
    stale_entries_dropped: int = 0  # index entries dropped by those corrections
    index_evictions: int = 0  # index entries evicted by the per-worker bound
    worker_purges: int = 0  # workers forgotten (removed, restarted)
    purged_entries: int = 0
    group_spills: int = 0  # routed outside their home worker group, which was saturated (routing/groups.py)
    load_cost_tokens: float = 0.0  # what one request in flight weighs in the choice now
    bytes_per_token: float = 0.0  # canonical prompt bytes per token the index is sized with now

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
