"""List prices per served model from a price-book file (USD per million tokens, exact to the tick), and
a starting book converted from LiteLLM's cost map without float arithmetic."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from billing.litellm_prices import from_cost_map, per_million
from billing.money import REFERENCE_RATES, Rates, Tokens, cost, price_book_from, ticks_per_token, usd_per_million
from gateway.cli import app as cli_app
from tests.billing.test_metering import _org_key, ledger_rows
from tests.conftest import Backend, gateway_settings, serve_gateway
from workersim.run import start_sim_server
from workersim.sim_settings import SimConfig


def test_prices_per_million_are_exact_ticks_per_token() -> None:
    assert ticks_per_token("0.20") == 2_000 and ticks_per_token("0.02") == 200 and ticks_per_token("1.50") == 15_000
    assert ticks_per_token("0.075") == 750
    with pytest.raises(ValueError, match="whole number of ticks"):
        ticks_per_token("0.0000001")
    book = price_book_from({"other": {"input": "1.00", "cached": "0.10", "output": "2.00"}})
    assert book.rates("other") == Rates(10_000, 1_000, 20_000)
    assert book.rates("grok-code-fast-1") == REFERENCE_RATES  # the built-in prices stay
    assert usd_per_million(book.rates("other")) == {"input": "1.00", "cached": "0.1", "output": "2.00"}
    with pytest.raises(ValueError, match="lacks"):
        price_book_from({"x": {"input": "1"}})


def test_litellm_floats_become_exact_decimal_prices() -> None:
    cost_map = {"gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
                                "cache_read_input_token_cost": 7.5e-08},
                "no-cache": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05}}
    assert per_million(1.5e-07) == "0.15" and per_million(7.5e-08) == "0.075"
    assert from_cost_map(cost_map, ["gpt-4o-mini", "no-cache"]) == {
        "gpt-4o-mini": {"input": "0.15", "cached": "0.075", "output": "0.6"},
        "no-cache": {"input": "3", "cached": "3", "output": "15"}}
    with pytest.raises(KeyError):
        from_cost_map(cost_map, ["unknown"])


def test_cli_converts_litellms_bundled_cost_map() -> None:
    result = CliRunner().invoke(cli_app, ["billing", "prices-from-litellm", "gpt-4o-mini"])
    assert result.exit_code == 0, result.output
    assert "gpt-4o-mini:" in result.output and "input: '0.15'" in result.output


async def test_a_model_of_the_price_book_is_billed_at_its_own_prices(backend: Backend, tmp_path: Path) -> None:
    book = tmp_path / "prices.yaml"
    book.write_text('models:\n  other-model: {input: "1.00", cached: "0.10", output: "2.00"}\n')
    sim = await start_sim_server(SimConfig(model="other-model", worker_id="other", time_scale=0.0))
    served = await serve_gateway(gateway_settings(backend, [sim.url], price_book_file=str(book)))
    try:
        org, _, key = await _org_key(served)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(served.url + "/v1/chat/completions", headers={"x-api-key": key},
                                   json={"model": "other-model", "max_tokens": 7,
                                         "messages": [{"role": "user", "content": "price me"}]})
            usage = (await resp.json())["usage"]
        (row,) = await ledger_rows(served, org, 1)
        expected = cost(Tokens(usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"],
                               usage["completion_tokens"]), Rates(10_000, 1_000, 20_000))
        assert row.model == "other-model" and row.list_ticks == expected and row.billed_ticks == expected
    finally:
        await served.stop()
        await sim.stop()
