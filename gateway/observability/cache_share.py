"""The cache SLO per partner: each organisation's cached share of prompt tokens over a sliding window.

An uncached prompt token costs ten times a cached one, so the share of prompt tokens a partner gets
from the cache is its economics, and a falling share is how an operator sees a client that rewrites
its history (or a routing problem). ``CacheShareWindow`` keeps, per organisation, prompt and cached
tokens in ``buckets`` time slices covering ``window_s`` (this process's traffic; the gauges sum over
replicas in PromQL). ``record`` is a few dict operations on the request path (the metrics observer,
after the response); everything else runs at scrape time.

Exposition (``CacheShareCollector``), without organisation labels (the default):
``gateway_org_cached_share{rank}`` for the ``top_n`` organisations by prompt tokens in the window,
``gateway_org_cached_share_orgs{le}`` the distribution (organisations at or below each share), and
``gateway_orgs_below_cache_slo`` (organisations with at least ``min_prompt_tokens`` in the window
whose plan sets a cache SLO they miss). With ``GATEWAY_METRICS_ORG_LABELS``: per organisation
``gateway_org_cached_share{org}``, ``gateway_org_window_prompt_tokens{org}``,
``gateway_org_window_cached_tokens{org}`` and ``gateway_org_cache_slo{org}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

SHARE_BUCKETS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)


@dataclass(frozen=True, slots=True)
class OrgShare:
    org_id: str
    prompt_tokens: int
    cached_tokens: int
    slo: float | None

    @property
    def share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def below_slo(self) -> bool:
        return self.slo is not None and self.share < self.slo


class CacheShareWindow:
    def __init__(self, window_s: float = 3600.0, buckets: int = 60,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._n = max(1, buckets)
        self._slice = window_s / self._n
        self._clock = clock
        # org -> [per slice: [slice number, prompt, cached]]
        self._orgs: dict[str, list[list[int]]] = {}
        self.slos: dict[str, float] = {}  # org -> its plan's cache SLO, refreshed from SQL in the background

    def record(self, org_id: str, prompt_tokens: int, cached_tokens: int) -> None:
        if prompt_tokens <= 0 or not org_id:
            return
        now = int(self._clock() // self._slice)
        rings = self._orgs.get(org_id)
        if rings is None:
            rings = self._orgs[org_id] = [[-1, 0, 0] for _ in range(self._n)]
        cell = rings[now % self._n]
        if cell[0] != now:
            cell[0], cell[1], cell[2] = now, 0, 0
        cell[1] += prompt_tokens
        cell[2] += min(cached_tokens, prompt_tokens)

    def snapshot(self) -> list[OrgShare]:
        """Every organisation with prompt tokens in the window, most prompt tokens first (and forgets
        the ones without any)."""
        now = int(self._clock() // self._slice)
        out = []
        for org_id, rings in list(self._orgs.items()):
            prompt = cached = 0
            for number, p, c in rings:
                if now - self._n < number <= now:
                    prompt += p
                    cached += c
            if prompt == 0:
                del self._orgs[org_id]
                continue
            out.append(OrgShare(org_id, prompt, cached, self.slos.get(org_id)))
        out.sort(key=lambda o: (-o.prompt_tokens, o.org_id))
        return out

    def share_of(self, org_id: str) -> OrgShare | None:
        for org in self.snapshot():
            if org.org_id == org_id:
                return org
        return None


class CacheShareCollector(Collector):
    def __init__(self, window: CacheShareWindow, org_labels: bool, top_n: int = 10,
                 min_prompt_tokens: int = 0) -> None:
        self._window = window
        self._org_labels = org_labels
        self._top_n = top_n
        self._min = min_prompt_tokens

    def collect(self) -> Iterator[Metric]:
        orgs = self._window.snapshot()
        span = f"over the last {self._window.window_s:g} s (this process)"
        below = GaugeMetricFamily("gateway_orgs_below_cache_slo",
                                  f"Organisations whose cached share of prompt tokens {span} is below their plan's "
                                  f"cache SLO (with enough prompt tokens to judge)")
        below.add_metric([], float(sum(1 for o in orgs if o.prompt_tokens >= self._min and o.below_slo)))
        yield below
        if self._org_labels:
            share = GaugeMetricFamily("gateway_org_cached_share", f"Cached share of prompt tokens {span}",
                                      labels=["org"])
            prompt = GaugeMetricFamily("gateway_org_window_prompt_tokens", f"Prompt tokens {span}", labels=["org"])
            cached = GaugeMetricFamily("gateway_org_window_cached_tokens", f"Cached prompt tokens {span}",
                                       labels=["org"])
            slo = GaugeMetricFamily("gateway_org_cache_slo", "The cache SLO of the organisation's plan",
                                    labels=["org"])
            for o in orgs:
                share.add_metric([o.org_id], o.share)
                prompt.add_metric([o.org_id], float(o.prompt_tokens))
                cached.add_metric([o.org_id], float(o.cached_tokens))
                if o.slo is not None:
                    slo.add_metric([o.org_id], o.slo)
            yield from (share, prompt, cached, slo)
            return
        top = GaugeMetricFamily("gateway_org_cached_share",
                                f"Cached share of prompt tokens {span}, of the organisations with the most prompt "
                                f"tokens (rank 1 = the most)", labels=["rank"])
        for rank, o in enumerate(orgs[:self._top_n], start=1):
            top.add_metric([str(rank)], o.share)
        dist = GaugeMetricFamily("gateway_org_cached_share_orgs",
                                 f"Organisations whose cached share of prompt tokens {span} is at most le",
                                 labels=["le"])
        for le in SHARE_BUCKETS:
            dist.add_metric([f"{le:g}"], float(sum(1 for o in orgs if o.share <= le)))
        dist.add_metric(["+Inf"], float(len(orgs)))
        yield from (top, dist)
