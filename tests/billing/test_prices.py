"""Prices to the tick: the worked example, both reasoning conventions, cached clamping, dated plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import (
    FREE,
    LIST_PLAN,
    REFERENCE_RATES,
    PlanBook,
    PriceBook,
    PricePlan,
    Rates,
    Tokens,
    cost,
    format_usd,
    usd_to_ticks,
)
from billing.usage_record import UsageRecord, estimate_prompt_tokens, tokens_from_usage

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_reference_prices_are_exact_in_ticks() -> None:
    assert usd_to_ticks("0.20") // 1_000_000 == REFERENCE_RATES.input
    assert usd_to_ticks("0.02") // 1_000_000 == REFERENCE_RATES.cached
    assert usd_to_ticks("1.50") // 1_000_000 == REFERENCE_RATES.output


def test_worked_example_from_a_real_response_to_the_tick() -> None:
    # xAI convention: reasoning outside completion_tokens, total = 213 + 27 + 171.
    usage = {"prompt_tokens": 213, "completion_tokens": 27, "total_tokens": 411,
             "prompt_tokens_details": {"cached_tokens": 192},
             "completion_tokens_details": {"reasoning_tokens": 171}}
    tokens = tokens_from_usage(usage)
    assert tokens == Tokens(prompt=213, cached=192, output=198, reasoning=171)
    charge = PlanBook().charge("org", "grok-code-fast-1", T0, tokens)
    assert charge.billed_ticks == charge.list_ticks == 3_050_400
    assert format_usd(charge.billed_ticks) == "0.00030504"


def test_reasoning_inside_completion_is_not_billed_twice() -> None:
    # OpenAI / vLLM convention: the same answer reports completion 198 including reasoning 171.
    usage = {"prompt_tokens": 213, "completion_tokens": 198, "total_tokens": 411,
             "prompt_tokens_details": {"cached_tokens": 192},
             "completion_tokens_details": {"reasoning_tokens": 171}}
    tokens = tokens_from_usage(usage)
    assert tokens.output == 198
    assert cost(tokens, REFERENCE_RATES) == 3_050_400


def test_reasoning_without_total_is_counted_once() -> None:
    inside = tokens_from_usage({"prompt_tokens": 10, "completion_tokens": 50,
                                "completion_tokens_details": {"reasoning_tokens": 30}})
    outside = tokens_from_usage({"prompt_tokens": 10, "completion_tokens": 20,
                                 "completion_tokens_details": {"reasoning_tokens": 30}})
    assert (inside.output, outside.output) == (50, 50)


def test_cached_tokens_are_clamped_to_the_prompt_and_junk_is_zero() -> None:
    tokens = tokens_from_usage({"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                                "prompt_tokens_details": {"cached_tokens": 160}})
    assert (tokens.cached, tokens.uncached) == (100, 0)
    junk = tokens_from_usage({"prompt_tokens": "12", "completion_tokens": -3, "prompt_tokens_details": None,
                              "completion_tokens_details": {"reasoning_tokens": True}})
    assert junk == Tokens(0, 0, 0, 0)


def test_plan_changes_at_a_timestamp() -> None:
    switch = T0 + timedelta(days=10)
    free = PricePlan("launch-free", "acme", starts_at=T0, ends_at=switch, rates=FREE)
    book = PlanBook(plans=[free])
    tokens = Tokens(prompt=1000, cached=0, output=100)
    before = book.charge("acme", "grok-code-fast-1", switch - timedelta(microseconds=1), tokens)
    at = book.charge("acme", "grok-code-fast-1", switch, tokens)
    assert (before.plan, before.billed_ticks, before.list_ticks) == ("launch-free", 0, 3_500_000)
    assert (at.plan, at.billed_ticks, at.list_ticks) == (LIST_PLAN, 3_500_000, 3_500_000)
    assert book.charge("other", "grok-code-fast-1", T0, tokens).plan == LIST_PLAN


def test_latest_starting_plan_wins_and_model_scoped_plans_apply_only_to_their_model() -> None:
    base = PricePlan("partner", "acme", starts_at=T0, rates=Rates(1_000, 100, 10_000))
    promo = PricePlan("promo", "acme", starts_at=T0 + timedelta(days=1), ends_at=T0 + timedelta(days=2),
                      rates=FREE, model="grok-code-fast-1")
    book = PlanBook(plans=[promo, base])
    tokens = Tokens(prompt=1, cached=0, output=1)
    assert book.charge("acme", "grok-code-fast-1", T0 + timedelta(hours=30), tokens).plan == "promo"
    assert book.charge("acme", "other-model", T0 + timedelta(hours=30), tokens).billed_ticks == 11_000
    assert book.charge("acme", "grok-code-fast-1", T0 + timedelta(days=3), tokens).billed_ticks == 11_000


def test_the_served_model_is_priced_from_the_book() -> None:
    book = PlanBook(PriceBook({"grok-code-fast-1": REFERENCE_RATES, "grok-4": Rates(30_000, 7_500, 150_000)}))
    tokens = Tokens(prompt=10, cached=0, output=10)
    assert book.charge("o", "grok-4", T0, tokens).list_ticks == 1_800_000
    assert book.charge("o", "grok-code-fast-1", T0, tokens).list_ticks == 170_000


def test_usd_text_round_trips_and_rejects_inexact_amounts() -> None:
    assert format_usd(usd_to_ticks("12.3456789012")) == "12.3456789012"
    assert format_usd(0) == "0.00"
    with pytest.raises(ValueError):
        usd_to_ticks("0.00000000001")
    with pytest.raises(ValueError):
        usd_to_ticks("1e3")


def test_prompt_estimate_counts_messages_and_prompts() -> None:
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": "x" * 400}]}) == 104
    assert estimate_prompt_tokens({"prompt": [[1, 2, 3], "abcd"]}) == 4


_counts = st.integers(min_value=0, max_value=10**7)
_rates = st.builds(Rates, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))


@given(prompt=_counts, cached=_counts, completion=_counts, reasoning=_counts, xai=st.booleans(), billed=_rates,
       offset_h=st.integers(-48, 48))
def test_property_record_cost_is_tokens_times_plan_rates(prompt: int, cached: int, completion: int, reasoning: int,
                                                         xai: bool, billed: Rates, offset_h: int) -> None:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion + (reasoning if xai else 0),
             "prompt_tokens_details": {"cached_tokens": cached},
             "completion_tokens_details": {"reasoning_tokens": reasoning}}
    if not xai and reasoning > completion:
        usage["completion_tokens"] = completion = reasoning  # inside: completion includes reasoning
        usage["total_tokens"] = prompt + completion
    tokens = tokens_from_usage(usage)
    plan = PricePlan("custom", "org", starts_at=T0, ends_at=T0 + timedelta(days=1), rates=billed)
    at = T0 + timedelta(hours=offset_h)
    charge = PlanBook(plans=[plan]).charge("org", "grok-code-fast-1", at, tokens)
    rates = billed if plan.covers("grok-code-fast-1", at) else REFERENCE_RATES
    output = completion + (reasoning if xai and reasoning else 0)
    c = min(cached, prompt)
    assert charge.billed_ticks == (prompt - c) * rates.input + c * rates.cached + output * rates.output
    assert charge.list_ticks == (prompt - c) * 2_000 + c * 200 + output * 15_000
    record = UsageRecord("r", "org", "k", "grok-code-fast-1", "grok-code-fast-1", "w", tokens.prompt,
                         tokens.cached, tokens.output, tokens.reasoning, charge.list_ticks, charge.billed_ticks,
                         charge.plan, 0, 0, 0, "ok", 200, True, False)
    assert UsageRecord.decode(record.encode()) == record
