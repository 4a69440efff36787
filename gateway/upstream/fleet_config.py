"""The model catalog's spec types (served name, aliases, hosted fallbacks, overflow), shared by the
config parser and the provider back adapter.

Kept minimal here (``parse_models``); the full fleet parser (workers with keys and headers, one-line errors
naming the file) belongs to the fleet-config work and replaces this module at merge with the same types.
This module imports nothing of the gateway.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

ENV_PREFIX = "os.environ/"


@dataclass(frozen=True, slots=True)
class ProviderSpec:  # one hosted fallback, any litellm model string
    model: str  # e.g. "xai/grok-code-fast-1"
    api_key: str | None  # already resolved from os.environ/NAME
    api_base: str | None
    extra: Mapping[str, Any]  # other litellm kwargs given in the file (timeout, ...)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str  # the served model name
    aliases: tuple[str, ...]
    fallback: tuple[ProviderSpec, ...]  # tried in order
    overflow: bool  # also use fallback when every worker is saturated


def _resolve(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        if name not in os.environ:
            raise ValueError(f"{where}: the environment variable {name} is not set")
        return os.environ[name]
    return value


def _provider(value: Any, where: str) -> ProviderSpec:
    if isinstance(value, ProviderSpec):
        return value
    if isinstance(value, str):
        value = {"model": value}
    if not isinstance(value, dict) or not isinstance(value.get("model"), str) or not value["model"].strip():
        raise ValueError(f"{where}.model: missing (a litellm model string, e.g. xai/grok-code-fast-1)")
    rest = {k: _resolve(v, f"{where}.{k}") for k, v in value.items() if k != "model"}
    return ProviderSpec(model=value["model"].strip(), api_key=rest.pop("api_key", None),
                        api_base=rest.pop("api_base", None), extra=MappingProxyType(rest))


def parse_model(value: Any, where: str) -> ModelSpec:
    if isinstance(value, ModelSpec):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"].strip():
        raise ValueError(f"{where}.name: missing")
    fallback = value.get("fallback") or []
    if not isinstance(fallback, list):
        raise ValueError(f"{where}.fallback: expected a list of providers")
    overflow = value.get("overflow", False)
    if not isinstance(overflow, bool):
        raise ValueError(f"{where}.overflow: expected true or false")
    aliases = value.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ValueError(f"{where}.aliases: expected a list of names")
    return ModelSpec(name=value["name"].strip(), aliases=tuple(aliases),
                     fallback=tuple(_provider(p, f"{where}.fallback[{i}]") for i, p in enumerate(fallback)),
                     overflow=overflow)


def parse_models(value: Any, where: str = "models") -> list[ModelSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of {{name, aliases, fallback, overflow}}")
    return [parse_model(item, f"{where}[{i}]") for i, item in enumerate(value)]
