"""Prices as integers: ticks (1 USD = 10^10 ticks), a price book per model, dated price plans.

Pure functions and values, no I/O. Every amount is an ``int``; nothing here ever sees a float.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

TICKS_PER_USD = 10**10
TICKS_PER_CENT = 10**8
LIST_PLAN = "list"


@dataclass(frozen=True, slots=True)
class Rates:
    """Ticks per token: uncached input, cached input, output (reasoning included)."""

    input: int
    cached: int
    output: int

    def __post_init__(self) -> None:
        if min(self.input, self.cached, self.output) < 0:
            raise ValueError("rates must be >= 0")


FREE = Rates(0, 0, 0)
# The reference model: $0.20 / $0.02 / $1.50 per million tokens.
REFERENCE_RATES = Rates(input=2_000, cached=200, output=15_000)
DEFAULT_PRICES: Mapping[str, Rates] = {"grok-code-fast-1": REFERENCE_RATES}


@dataclass(frozen=True, slots=True)
class PriceBook:
    """List prices per served model; ``fallback`` prices a model the book does not name."""

    models: Mapping[str, Rates] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    fallback: Rates = REFERENCE_RATES

    def rates(self, model: str) -> Rates:
        return self.models.get(model, self.fallback)


TOKENS_PER_PRICE_UNIT = 10**6  # list prices are quoted in USD per million tokens


def ticks_per_token(usd_per_million: str) -> int:
    """'0.20' USD per million tokens -> 2,000 ticks per token; a price that is not a whole number of
    ticks per token is refused rather than rounded."""
    ticks, rest = divmod(usd_to_ticks(usd_per_million), TOKENS_PER_PRICE_UNIT)
    if rest or ticks < 0:
        raise ValueError(f"{usd_per_million!r} USD per million tokens is not a whole number of ticks per token")
    return ticks


def price_book_from(models: Mapping[str, Mapping[str, str]]) -> PriceBook:
    """A price book from ``{model: {"input": "0.20", "cached": "0.02", "output": "1.50"}}`` (USD per million
    tokens, decimal strings); the built-in reference prices stay for models the mapping does not name."""
    book = dict(DEFAULT_PRICES)
    for model, prices in models.items():
        missing = {"input", "cached", "output"} - set(prices)
        if missing:
            raise ValueError(f"price of {model!r} lacks {sorted(missing)}")
        book[model] = Rates(ticks_per_token(str(prices["input"])), ticks_per_token(str(prices["cached"])),
                            ticks_per_token(str(prices["output"])))
    return PriceBook(models=book)


def usd_per_million(rates: Rates) -> dict[str, str]:
    """The inverse of ``price_book_from`` for one model: exact decimal strings."""
    return {name: format_usd(getattr(rates, name) * TOKENS_PER_PRICE_UNIT) for name in ("input", "cached", "output")}


@dataclass(frozen=True, slots=True)
class PricePlan:
    """What an organisation is billed between ``starts_at`` (inclusive) and ``ends_at`` (exclusive).

    ``rates`` None bills the list price; ``FREE`` meters every token and bills 0. ``model`` None
    applies to every model. When several plans cover a moment, the one that started last wins.
    """

    name: str
    org_id: str
    starts_at: datetime
    ends_at: datetime | None = None
    rates: Rates | None = None
    model: str | None = None

    def covers(self, model: str, at: datetime) -> bool:
        if self.model is not None and self.model != model:
            return False
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Billable token counts of one request. ``output`` includes ``reasoning`` exactly once."""

    prompt: int
    cached: int
    output: int
    reasoning: int = 0

    @property
    def uncached(self) -> int:
        return self.prompt - self.cached


@dataclass(frozen=True, slots=True)
class Charge:
    plan: str
    list_ticks: int  # what the tokens are worth at list price
    billed_ticks: int  # what the plan bills


def cost(tokens: Tokens, rates: Rates) -> int:
    return tokens.uncached * rates.input + tokens.cached * rates.cached + tokens.output * rates.output


class PlanBook:
    """Every organisation's dated plans, indexed for lookups on the request path."""

    __slots__ = ("_by_org", "prices")

    def __init__(self, prices: PriceBook | None = None, plans: Iterable[PricePlan] = ()) -> None:
        self.prices = prices or PriceBook()
        self._by_org: dict[str, list[PricePlan]] = {}
        for plan in sorted(plans, key=lambda p: p.starts_at, reverse=True):
            self._by_org.setdefault(plan.org_id, []).append(plan)

    def plan_at(self, org_id: str, model: str, at: datetime) -> PricePlan | None:
        for plan in self._by_org.get(org_id, ()):
            if plan.covers(model, at):
                return plan
        return None

    def billed_rates(self, org_id: str, model: str, at: datetime) -> tuple[str, Rates]:
        plan = self.plan_at(org_id, model, at)
        listed = self.prices.rates(model)
        if plan is None:
            return LIST_PLAN, listed
        return plan.name, plan.rates if plan.rates is not None else listed

    def charge(self, org_id: str, model: str, at: datetime, tokens: Tokens) -> Charge:
        """Price ``tokens`` of ``model`` (the model that served) at the plan valid at ``at``."""
        name, billed = self.billed_rates(org_id, model, at)
        return Charge(name, cost(tokens, self.prices.rates(model)), cost(tokens, billed))


def format_usd(ticks: int) -> str:
    """Exact decimal dollars: 3050400 -> '0.00030504'."""
    sign = "-" if ticks < 0 else ""
    whole, frac = divmod(abs(ticks), TICKS_PER_USD)
    text = f"{frac:010d}".rstrip("0")
    return f"{sign}{whole}.{text or '00'}"


def usd_to_ticks(usd: str) -> int:
    """Parse a decimal dollar string exactly ('0.20' -> 2_000_000_000); at most 10 decimals."""
    text = usd.strip()
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    if not (whole or frac) or not (whole or "0").isdigit() or (frac and not frac.isdigit()) or len(frac) > 10:
        raise ValueError(f"not an exact dollar amount: {usd!r}")
    ticks = int(whole or "0") * TICKS_PER_USD + int((frac or "0").ljust(10, "0"))
    return -ticks if negative else ticks
