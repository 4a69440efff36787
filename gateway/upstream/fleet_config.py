"""The fleet as the config file describes it: workers (URL, key, extra headers, models) and the model
catalog (served name, aliases, hosted fallbacks, overflow).

A string value ``os.environ/NAME`` anywhere in the file is read from that environment variable (as in
LiteLLM's config); a variable that is not set is an error naming it. Every error is one line: the file,
the path in it and the reason (``FleetConfigError``).

This module imports nothing of the gateway: ``gateway.config`` parses the file with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "os.environ/"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers the gateway sets itself or that belong to the hop: a worker's config may not override them.
RESERVED_HEADERS = frozenset({"authorization", "content-type", "content-length", "host", "transfer-encoding",
                              "connection", "x-request-id"})
_WORKER_KEYS = frozenset({"url", "api_key", "headers", "models"})
_MODEL_KEYS = frozenset({"name", "aliases", "fallback", "overflow"})


class FleetConfigError(ValueError):
    """A bad fleet entry: ``str(err)`` is one line, ``<where>: <reason>``."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)


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


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One worker of the file, of ``GATEWAY_WORKERS`` or of the admin API."""

    url: str
    api_key: str | None = field(default=None, repr=False)  # resolved; never logged (repr hides it)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    models: tuple[str, ...] = ()  # empty: discovered from the worker's /v1/models
    # What was written for the key (``os.environ/NAME``, or None): what the admin API stores and shows.
    api_key_ref: str | None = None


# --- values ---------------------------------------------------------------------------------------

def env_reference(value: object) -> str | None:
    """The variable name of an ``os.environ/NAME`` string, else None."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return value[len(ENV_PREFIX):]
    return None


def resolve_env(value: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """``value``, or the environment variable it names when it is ``os.environ/NAME``."""
    name = env_reference(value)
    if name is None:
        return value
    if not _ENV_NAME.fullmatch(name):
        raise FleetConfigError(where, f"{value!r} does not name an environment variable")
    env = os.environ if environ is None else environ
    if name not in env:
        raise FleetConfigError(where, f"the environment variable {name} is not set")
    return env[name]


def resolve_tree(value: Any, where: str) -> Any:
    """A copy of a parsed YAML tree with every ``os.environ/NAME`` string read from the environment."""
    if isinstance(value, str):
        return resolve_env(value, where)
    if isinstance(value, dict):
        return {k: resolve_tree(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _text(value: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise FleetConfigError(where, "expected a non-empty string" if not empty else "expected a string")
    return value.strip()


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FleetConfigError(where, "expected a list of names")
    out: list[str] = []
    for i, item in enumerate(value):
        name = _text(item, f"{where}[{i}]")
        if name not in out:
            out.append(name)
    return tuple(out)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FleetConfigError(where, "expected a mapping")
    return value


def _unknown(entry: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(str(k) for k in entry if k not in allowed)
    if extra:
        raise FleetConfigError(f"{where}.{extra[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


# --- workers --------------------------------------------------------------------------------------

def check_url(value: Any, where: str) -> str:
    """An http(s) URL with a host, without its trailing slash."""
    url = _text(value, where)
    if _UNSAFE_URL.search(url):
        raise FleetConfigError(where, "a worker URL may not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise FleetConfigError(where, f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FleetConfigError(where, "a worker URL is http:// or https:// followed by a host")
    return url.rstrip("/")


def check_headers(value: Any, where: str) -> Mapping[str, str]:
    """Extra headers for one worker: names and values HTTP allows, none the gateway sets itself."""
    if value is None:
        return {}
    out: dict[str, str] = {}
    for name, raw in _mapping(value, where).items():
        at = f"{where}.{name}"
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise FleetConfigError(at, "not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise FleetConfigError(at, "set by the gateway itself (use api_key for authorization)")
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise FleetConfigError(at, "a header value is a string")
        text = resolve_env(str(raw), at)
        if _HEADER_VALUE_BAD.search(text):
            raise FleetConfigError(at, "a header value may not contain control characters")
        out[name] = text
    return out


def parse_worker(value: Any, where: str, environ: Mapping[str, str] | None = None) -> WorkerSpec:
    """A worker given as a plain URL string or as ``{url, api_key, headers, models}``."""
    if isinstance(value, WorkerSpec):
        return value
    if isinstance(value, str):
        return WorkerSpec(url=check_url(value, where))
    entry = _mapping(value, where)
    _unknown(entry, _WORKER_KEYS, where)
    if "url" not in entry:
        raise FleetConfigError(f"{where}.url", "missing")
    url = check_url(entry["url"], f"{where}.url")
    key_raw = entry.get("api_key")
    api_key: str | None = None
    ref: str | None = None
    if key_raw is not None:
        key_text = _text(key_raw, f"{where}.api_key")
        ref = key_text if env_reference(key_text) is not None else None
        api_key = resolve_env(key_text, f"{where}.api_key", environ)
        if _HEADER_VALUE_BAD.search(api_key) or not api_key.strip():
            raise FleetConfigError(f"{where}.api_key", "an API key is printable text")
    return WorkerSpec(url=url, api_key=api_key, headers=check_headers(entry.get("headers"), f"{where}.headers"),
                      models=_names(entry.get("models"), f"{where}.models"), api_key_ref=ref)


def parse_workers(value: Any, where: str = "workers") -> list[WorkerSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FleetConfigError(where, "expected a list of worker URLs or {url, api_key, headers, models}")
    workers = [parse_worker(item, f"{where}[{i}]") for i, item in enumerate(value)]
    seen: set[str] = set()
    for i, w in enumerate(workers):
        if w.url in seen:
            raise FleetConfigError(f"{where}[{i}].url", f"{w.url} is listed twice")
        seen.add(w.url)
    return workers


# --- models ---------------------------------------------------------------------------------------

def parse_provider(value: Any, where: str) -> ProviderSpec:
    if isinstance(value, ProviderSpec):
        return value
    if isinstance(value, str):
        return ProviderSpec(model=_text(value, where), api_key=None, api_base=None, extra={})
    entry = _mapping(value, where)
    if "model" not in entry:
        raise FleetConfigError(f"{where}.model", "missing (a litellm model string, e.g. xai/grok-code-fast-1)")
    model = _text(entry["model"], f"{where}.model")
    resolved = {k: resolve_tree(v, f"{where}.{k}") for k, v in entry.items() if k not in ("model",)}
    api_key = resolved.pop("api_key", None)
    api_base = resolved.pop("api_base", None)
    if api_key is not None:
        api_key = _text(api_key, f"{where}.api_key")
    if api_base is not None:
        api_base = _text(api_base, f"{where}.api_base")
    return ProviderSpec(model=model, api_key=api_key, api_base=api_base, extra=resolved)


def parse_model(value: Any, where: str) -> ModelSpec:
    if isinstance(value, ModelSpec):
        return value
    entry = _mapping(value, where)
    _unknown(entry, _MODEL_KEYS, where)
    if "name" not in entry:
        raise FleetConfigError(f"{where}.name", "missing")
    name = _text(entry["name"], f"{where}.name")
    aliases = tuple(a for a in _names(entry.get("aliases"), f"{where}.aliases") if a != name)
    fallback_raw = entry.get("fallback")
    if fallback_raw is not None and not isinstance(fallback_raw, list):
        raise FleetConfigError(f"{where}.fallback", "expected a list of providers")
    fallback = tuple(parse_provider(p, f"{where}.fallback[{i}]") for i, p in enumerate(fallback_raw or ()))
    overflow = entry.get("overflow", False)
    if not isinstance(overflow, bool):
        raise FleetConfigError(f"{where}.overflow", "expected true or false")
    return ModelSpec(name=name, aliases=aliases, fallback=fallback, overflow=overflow)


def parse_models(value: Any, where: str = "models") -> list[ModelSpec]:
    """The model catalog; a name or alias may stand for one model only."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FleetConfigError(where, "expected a list of {name, aliases, fallback, overflow}")
    models = [parse_model(item, f"{where}[{i}]") for i, item in enumerate(value)]
    owner: dict[str, str] = {}
    for i, m in enumerate(models):
        for j, name in enumerate((m.name, *m.aliases)):
            at = f"{where}[{i}].name" if j == 0 else f"{where}[{i}].aliases[{j - 1}]"
            if name in owner:
                raise FleetConfigError(at, f"{name!r} already names model {owner[name]!r}")
            owner[name] = m.name
    return models


def alias_table(models: list[ModelSpec]) -> dict[str, str]:
    """Alias -> served model name (the served names themselves are not in it)."""
    return {alias: m.name for m in models for alias in m.aliases}
