"""The hosted providers each served model may fall back to, in order, with their breakers, the retry
budget and the per-organisation policy: what the forwarder asks before it leaves the fleet.

``route(model)`` answers in one dict lookup (names and aliases), so the GPU path pays nothing for a model
without fallbacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.pipeline.principal import Principal
from gateway.upstream.fleet_config import ModelSpec
from gateway.upstream.provider import HostedProviders, ProviderHealth, ProviderTarget
from gateway.upstream.provider_breaker import OPEN, CircuitBreaker, RetryBudget

FALLBACK, OVERFLOW = "fallback", "overflow"


@dataclass(frozen=True, slots=True)
class ModelRoute:
    spec: ModelSpec
    targets: tuple[ProviderTarget, ...]


class ProviderFleet:
    def __init__(self, models: list[ModelSpec], upstream: HostedProviders, *, breaker_failures: int,
                 breaker_cooldown_s: float, retry_ratio: float, default_allowed: bool, overflow_waiting: int) -> None:
        self.upstream = upstream
        self.budget = RetryBudget(retry_ratio)
        self.default_allowed = default_allowed
        self.overflow_waiting = overflow_waiting
        self._routes: dict[str, ModelRoute] = {}
        self.health: dict[str, ProviderHealth] = {}
        for spec in models:
            if not spec.fallback:
                continue
            targets = []
            for provider in spec.fallback:
                health = self.health.get(provider.model)
                if health is None:
                    health = self.health[provider.model] = ProviderHealth(
                        provider.model, CircuitBreaker(breaker_failures, breaker_cooldown_s))
                targets.append(ProviderTarget(spec.name, provider, health))
            route = ModelRoute(spec, tuple(targets))
            for name in (spec.name, *spec.aliases):
                self._routes[name] = route

    def route(self, model: str, principal: Principal) -> ModelRoute | None:
        """The providers ``model`` may go to for this caller, or None (no fallbacks, or the organisation's
        traffic must stay in the fleet)."""
        route = self._routes.get(model)
        if route is None:
            return None
        allowed = principal.providers_allowed
        if allowed is None:
            allowed = self.default_allowed
        return route if allowed else None

    def knows(self, model: str) -> bool:
        return model in self._routes

    def models(self) -> frozenset[str]:
        return frozenset(self._routes)

    def stats(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Counters for /metrics (read at scrape time)."""
        requests: list[tuple[dict[str, str], float]] = []
        failures: list[tuple[dict[str, str], float]] = []
        opens: list[tuple[dict[str, str], float]] = []
        state: list[tuple[dict[str, str], float]] = []
        for t in self.health.values():
            requests.extend(({"provider": t.label, "reason": reason, "result": result}, float(n))
                            for (reason, result), n in t.requests.items())
            failures.extend(({"provider": t.label, "error": kind}, float(n)) for kind, n in t.errors.items())
            opens.append(({"provider": t.label}, float(t.breaker.opens)))
            state.append(({"provider": t.label}, 1.0 if t.breaker.state == OPEN else 0.0))
        return {"gateway_provider_requests_total": requests, "gateway_provider_errors_total": failures,
                "gateway_provider_circuit_opens_total": opens, "gateway_provider_circuit_open": state,
                "gateway_provider_retry_budget_exhausted_total": [({}, float(self.budget.exhausted))]}
