"""Gateways whose models fall back to local fake providers (``providerfake``), reached through litellm's
real code (its ``api_base`` pointed at the fake)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import openai

from gateway.upstream.fleet_config import ModelSpec, ProviderSpec
from providerfake import ProviderFake
from tests.conftest import MODEL, Backend, ServedGateway, gateway_settings, serve_gateway, served


@dataclass
class Fleetless:
    """A gateway, its fake providers (in the model's fallback order) and a key of a fresh organisation."""

    gateway: ServedGateway
    providers: list[ProviderFake]
    org_id: str
    key: str

    def client(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gateway.url + "/v1", api_key=key or self.key, max_retries=0,
                                  timeout=30)


def provider_spec(model: str, url: str, **extra: Any) -> ProviderSpec:
    return ProviderSpec(model=model, api_key="sk-fake-provider", api_base=url + "/v1", extra=MappingProxyType(extra))


@contextlib.asynccontextmanager
async def fallback_gateway(backend: Backend, shapes: tuple[str, ...] = ("xai",), workers: list[str] | None = None,
                           overflow: bool = False, down_first: bool = False, **overrides: Any,
                           ) -> AsyncIterator[Fleetless]:
    """A gateway serving MODEL with ``workers`` (none: the whole fleet is down) and hosted fallbacks: one fake
    per shape, in order (``xai``: litellm's ``xai/`` provider; ``openai``: an OpenAI-compatible one); with
    ``down_first`` a provider nobody listens on comes first."""
    fakes = [ProviderFake(shape=shape) for shape in shapes]
    async with contextlib.AsyncExitStack() as stack:
        specs = []
        if down_first:
            specs.append(provider_spec("openai/down-model", "http://127.0.0.1:9"))
        for fake in fakes:
            url = await stack.enter_async_context(served(fake))
            specs.append(provider_spec("xai/grok-code-fast-1" if fake.shape == "xai" else "openai/fake-model", url))
        models = [ModelSpec(name=MODEL, aliases=(), fallback=tuple(specs), overflow=overflow)]
        settings = gateway_settings(backend, workers or [], models=models, **overrides)
        gw = await serve_gateway(settings)
        try:
            rt = gw.app.runtime
            # litellm is imported on the first request to a provider (seconds on a loaded machine): here first,
            # so the clients' timeouts measure the requests.
            await rt.providers.upstream.litellm()
            org = await rt.keys.get_or_create_org("hosted-" + secrets.token_hex(3))
            key = (await rt.keys.create_key(org.id, "k")).key
            yield Fleetless(gw, fakes, org.id, key)
        finally:
            await gw.stop()
