"""A starting price book from LiteLLM's model cost map, for models the gateway may serve besides the
reference one. Offline and on demand only (``gateway billing prices-from-litellm``): litellm takes
seconds to import and is never loaded by the server.

LiteLLM keeps prices as float USD per token; they are turned into exact decimal strings per million
tokens through their shortest repr, never through float arithmetic. Review what comes out before using
it: for xai/grok-code-fast-1 the map said $1.00 / $0.20 / $2.00 per million (input / cached /
output) when the maker's price is $0.20 / $0.02 / $1.50.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from billing.money import ticks_per_token

_FIELDS = {"input": "input_cost_per_token", "cached": "cache_read_input_token_cost",
           "output": "output_cost_per_token"}


def per_million(cost_per_token: float | int | str) -> str:
    """USD per token (as LiteLLM stores it) -> exact USD per million tokens, e.g. 1.5e-07 -> '0.15'."""
    value = Decimal(repr(cost_per_token) if isinstance(cost_per_token, float) else str(cost_per_token))
    return format((value * 10**6).normalize(), "f")


def from_cost_map(cost_map: Mapping[str, Mapping[str, Any]], models: Iterable[str]) -> dict[str, dict[str, str]]:
    """``{model: {"input", "cached", "output"}}`` in USD per million tokens, checked to be whole ticks.
    A model without a cached-input price is priced at its input price for cached tokens."""
    out: dict[str, dict[str, str]] = {}
    for model in models:
        entry = cost_map.get(model)
        if entry is None:
            raise KeyError(f"LiteLLM's cost map has no model {model!r}")
        if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
            raise ValueError(f"LiteLLM has no token prices for {model!r}")
        prices = {name: per_million(entry[key] if entry.get(key) is not None else entry["input_cost_per_token"])
                  for name, key in _FIELDS.items()}
        for price in prices.values():
            ticks_per_token(price)  # refuses prices that are not whole ticks per token
        out[model] = prices
    return out


def load_cost_map() -> Mapping[str, Mapping[str, Any]]:
    """LiteLLM's bundled cost map (never fetched from the network)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # heavy: imported only here

    cost_map: Mapping[str, Mapping[str, Any]] = litellm.model_cost
    return cost_map
