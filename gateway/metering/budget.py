"""Spend caps: a monthly budget per organisation and optionally per key, enforced in the state store.

The budget comes with the principal (read with the key, cached with it: no SQL here). In the
pre-request round trip the stage reserves the request's estimated cost (prompt estimate plus the
output limit at the billed rates); a request is admitted while spent + reserved is under the limit,
so concurrent requests overshoot by at most one request. ``finish`` releases the reservation and
adds the real cost. Over budget: 429 ``insufficient_quota``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from billing.money import Tokens, cost
from gateway import errors
from gateway.limits.scripts import SETTLED_MARKER_MS, first_settling
from gateway.metering.usage_stage import PriceCatalog, prompt_estimate, usage_record
from gateway.pipeline.exchange import Exchange
from gateway.state.base import MemoryData, RoundTrip, Script
from gateway.state.keyspace import KeySpace

_NOTE = "budget"
_KEEP_MS = 3_456_000_000  # month keys outlive their last use by 40 days


def month_of(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m")


class MonthClock:
    """``month_of`` for a stream of current times: the month's label is computed once per month (a
    datetime and a strftime per request cost more than the rest of the budget's plan)."""

    __slots__ = ("_end", "_label", "_start")

    def __init__(self) -> None:
        self._start = self._end = 0.0
        self._label = ""

    def month(self, epoch_s: float) -> str:
        if not self._start <= epoch_s < self._end:
            moment = datetime.fromtimestamp(epoch_s, UTC)
            first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            following = first.replace(year=first.year + 1, month=1) if first.month == 12 else \
                first.replace(month=first.month + 1)
            self._start, self._end, self._label = first.timestamp(), following.timestamp(), first.strftime("%Y-%m")
        return self._label


def _purge(data: MemoryData, hash_key: str, res_key: str, now_ms: int) -> None:
    spend, res = data.hash(hash_key), data.zset(res_key)
    for member, expiry in list(res.items()):
        if expiry <= now_ms:
            del res[member]
            spend["reserved"] = int(spend.get("reserved", 0)) - int(member.rsplit(":", 1)[1])


def _reserve_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    member, estimate, ttl = str(args[0]), int(args[1]), int(args[2])
    pairs = [(keys[i], keys[i + 1]) for i in range(0, len(keys), 2)]
    used = limit = 0
    for i, (hash_key, res_key) in enumerate(pairs, start=1):
        _purge(data, hash_key, res_key, now_ms)
        spend = data.hash(hash_key)
        floor = int(args[2 + 2 * i])
        if "spent" not in spend or floor > int(spend["spent"]):
            spend["spent"] = floor
        used = int(spend["spent"]) + int(spend.get("reserved", 0))
        limit = int(args[1 + 2 * i])
        if used >= limit:
            return [0, i, str(used), str(limit)]
    for hash_key, res_key in pairs:
        spend = data.hash(hash_key)
        spend["reserved"] = int(spend.get("reserved", 0)) + estimate
        data.zset(res_key)[member] = now_ms + ttl
        data.expire(hash_key, now_ms + ttl + _KEEP_MS)
        data.expire(res_key, now_ms + ttl + _KEEP_MS)
    return [1, 0, str(used), str(limit)]


def _settle_py(data: MemoryData, keys: Sequence[str], args: Sequence[Any], now_ms: int) -> Any:
    if not first_settling(data, keys[0], int(args[4]), now_ms):
        return 0
    member, estimate, spent, ttl = str(args[0]), int(args[1]), int(args[2]), int(args[3])
    for i in range(1, len(keys), 2):
        spend, res = data.hash(keys[i]), data.zset(keys[i + 1])
        if res.pop(member, None) is not None:
            spend["reserved"] = int(spend.get("reserved", 0)) - estimate
        spend["spent"] = int(spend.get("spent", 0)) + spent
        data.expire(keys[i], now_ms + ttl + _KEEP_MS)
    return 1


BUDGET_RESERVE = Script.load("budget_reserve", _reserve_py)
BUDGET_SETTLE = Script.load("budget_settle", _settle_py)


class Budgets:
    """A Stage: one reservation script before the upstream call, one settling script after."""

    def __init__(self, keyspace: KeySpace, catalog: PriceCatalog, default_output_tokens: int = 4096,
                 reservation_ttl_s: float = 900.0) -> None:
        self._keys = keyspace
        self._catalog = catalog
        self._default_output = default_output_tokens
        self._ttl_ms = int(reservation_ttl_s * 1000)
        self.rejections = 0  # requests refused over a budget (exported by the metrics collector)
        self._clock = MonthClock()

    def estimate(self, ex: Exchange) -> int:
        body = ex.request.body
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or self._default_output
        tokens = Tokens(prompt=prompt_estimate(ex.request), cached=0, output=int(limit))
        _, rates = self._catalog.book.billed_rates(ex.principal.org_id, ex.request.model,
                                                   datetime.fromtimestamp(ex.started_wall, UTC))
        return cost(tokens, rates)

    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        budget = ex.principal.budget
        if budget is None:
            return
        month = self._clock.month(ex.started_wall)
        org = ex.principal.org_id
        keys: list[str] = []
        limits: list[Any] = []
        same_month = budget.month == month
        if budget.org_limit_ticks is not None:
            keys += self._keys.budget(org, month)
            limits += [budget.org_limit_ticks, budget.org_spent_ticks if same_month else 0]
        if budget.key_limit_ticks is not None:
            keys += self._keys.budget(org, month, ex.principal.key_id)
            limits += [budget.key_limit_ticks, budget.key_spent_ticks if same_month else 0]
        if not keys:
            return
        estimate = self.estimate(ex)
        member = f"{ex.request_id}:{estimate}"
        index = trip.call(BUDGET_RESERVE, keys, [member, estimate, self._ttl_ms, *limits])
        ex.notes[_NOTE] = (index, keys, member, estimate, False)

    def observe(self, ex: Exchange, results: list[Any]) -> None:
        """The script reserved ``estimate`` when it admitted: settle it, even if another stage refuses."""
        note = ex.notes.get(_NOTE)
        if note is not None and int(results[note[0]][0]):
            index, keys, member, estimate, _ = note
            ex.notes[_NOTE] = (index, keys, member, estimate, True)

    def admit(self, ex: Exchange, results: list[Any]) -> None:
        note = ex.notes.get(_NOTE)
        if note is None:
            return
        index = note[0]
        admitted, which, used, limit = results[index]
        if int(admitted):
            return
        budget = ex.principal.budget
        org_checked = budget is not None and budget.org_limit_ticks is not None
        scope = "organisation" if org_checked and int(which) == 1 else "API key"
        self.rejections += 1
        raise errors.insufficient_quota(scope, int(used), int(limit))

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        note = ex.notes.get(_NOTE)
        if note is None or not note[4]:
            return
        _, keys, member, estimate, _ = note
        record = usage_record(ex, self._catalog)
        spent = record.billed_ticks if record is not None else 0
        if ex.resettling and ex.degraded:
            # Served from local state: only release what the reserve may have taken in Redis. Its cost reaches
            # Redis through the month-to-date floor from SQL once the ledger holds it; adding it here too
            # would count it twice.
            spent = 0
        marker = self._keys.budget_settled(ex.principal.org_id, ex.request_id)
        trip.call(BUDGET_SETTLE, [marker, *keys], [member, estimate, spent, self._ttl_ms, SETTLED_MARKER_MS])
