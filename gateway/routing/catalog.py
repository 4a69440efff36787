"""The model catalog on the request path: aliases resolved to the served model, and the per-key and
per-organisation allow-lists checked, from what is in process (the settings and the verified key; no SQL,
no Redis).

A request for an alias is served, limited and billed as the model it names: the canonical request and the
forwarded body carry the served name, so the worker's answer names the served model too. An allow-list
may name served models or aliases; either allows the model (by any of its names). A key is bound by its
own list and by its organisation's, when either is set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway import errors
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal


class ModelCatalog:
    def __init__(self, aliases: Mapping[str, str], catalog_models: Iterable[str] = ()) -> None:
        self._aliases = dict(aliases)  # alias -> served name
        self._names: dict[str, list[str]] = {}  # served name -> its aliases
        for alias, name in self._aliases.items():
            self._names.setdefault(name, []).append(alias)
        # Served names the catalog knows even while no worker lists them (served by a fallback).
        self.catalog_models = frozenset(catalog_models)
        self._allowed: dict[tuple[str, ...], frozenset[str]] = {}

    def resolve(self, model: str) -> str:
        return self._aliases.get(model, model)

    def aliases_of(self, model: str) -> list[str]:
        return self._names.get(model, [])

    def _served(self, names: tuple[str, ...]) -> frozenset[str]:
        """The served models an allow-list admits (memoised: a handful of distinct lists per replica)."""
        served = self._allowed.get(names)
        if served is None:
            served = frozenset(self.resolve(n) for n in names)
            if len(self._allowed) < 10_000:
                self._allowed[names] = served
        return served

    def may_use(self, principal: Principal, model: str) -> bool:
        """May ``principal`` use the served model ``model``?"""
        for names in (principal.org_models, principal.key_models):
            if names is not None and model not in self._served(names):
                return False
        return True

    def admit(self, ex: Exchange) -> None:
        """Resolve the request's alias and check the allow-lists (403 ``model_not_allowed``)."""
        request = ex.request
        asked = request.model
        served = self._aliases.get(asked)
        model = asked if served is None else served
        principal = ex.principal
        if (principal.org_models is not None or principal.key_models is not None) and not self.may_use(principal,
                                                                                                        model):
            raise errors.model_not_allowed(asked)
        if served is not None:
            ex.set_fields({"model": served})  # the worker knows the served name only
            request.model = served
            ex.requested_model = asked

    def listing(self, served_models: Iterable[str], principal: Principal) -> list[tuple[str, str]]:
        """``(id, served model)`` of every model and alias ``principal`` may use, models first."""
        out: list[tuple[str, str]] = []
        for model in sorted({*served_models, *self.catalog_models}):
            if self.may_use(principal, model):
                out.append((model, model))
                out.extend((alias, model) for alias in self.aliases_of(model))
        return out
