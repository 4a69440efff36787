"""Usage over a time range, bucketed by hour or day and grouped by key, model or end user, read from the
hourly rollups, never from the per-request ledger.

Two queries, both one range scan of ``(org_id, hour)`` (or of the primary key, hour first, across
organisations): the sums per hour from ``usage_hourly`` (at most 24 x 366 rows, bucketed into days
here) and the sums per group, from ``usage_hourly`` for keys and models and from the larger
``usage_hourly_end_users`` only for end users. On PostgreSQL the two over ``usage_hourly`` are one
scan with GROUPING SETS. The totals are the sum of the hours.
Used by ``/v1/usage`` (the caller's organisation, always) and ``/admin/usage`` (any or every organisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger.billing_queries import aware
from billing.ledger.ledger_tables import UsageHourly, UsageHourlyEndUser
from billing.money import format_usd
from gateway.db.gateway_tables import ApiKey
from gateway.services.service_errors import InvalidInput

Bucket = Literal["hour", "day"]
GroupBy = Literal["key", "model", "end_user"]

MAX_RANGE = timedelta(days=366)
MAX_HOUR_BUCKETS = 31 * 24  # hour buckets over at most a month (a chart of 744 points)
MAX_GROUPS = 1000  # the largest groups by billed cost, then requests
_HOUR = timedelta(hours=1)

_COUNTERS = ("requests", "prompt_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "list_ticks",
             "billed_ticks", "errors", "rate_limited", "decode_ms", "decode_tokens")


class RangeError(InvalidInput):
    """A time range the usage API does not serve (the message says why)."""

    code = "invalid_range"
    param = "start"


@dataclass(slots=True)
class Sums:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    list_ticks: int = 0
    billed_ticks: int = 0
    errors: int = 0
    rate_limited: int = 0
    decode_ms: int = 0
    decode_tokens: int = 0

    def add(self, other: Sums) -> None:
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def view(self) -> dict[str, Any]:
        """The row the API returns: tokens by type, money as exact decimal strings and ticks, ratios."""
        return {
            "input_tokens": self.prompt_tokens - self.cached_tokens, "cached_input_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens, "reasoning_tokens": self.reasoning_tokens,
            "requests": self.requests, "errors": self.errors, "rate_limited": self.rate_limited,
            "list_cost_usd": format_usd(self.list_ticks), "billed_cost_usd": format_usd(self.billed_ticks),
            "list_cost_ticks": self.list_ticks, "billed_cost_ticks": self.billed_ticks,
            "cached_share": self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None,
            "mean_output_tokens_per_second":
                round(self.decode_tokens * 1000 / self.decode_ms, 3) if self.decode_ms else None,
        }


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: datetime
    end: datetime
    bucket: Bucket = "day"
    group_by: GroupBy = "key"
    org_id: str | None = None  # None: every organisation (admin only)


@dataclass(slots=True)
class UsageReport:
    query: UsageQuery
    buckets: list[tuple[datetime, Sums]]
    groups: list[tuple[str, str, Sums]]  # (group, name, sums)
    totals: Sums = field(default_factory=Sums)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _floor(moment: datetime, bucket: Bucket) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def normalise_range(start: datetime | None, end: datetime | None, bucket: Bucket,
                    now: datetime | None = None) -> tuple[datetime, datetime]:
    """The hour-aligned range ``[start, end)`` to report (default: the last 7 days), or ``RangeError``."""
    now = _utc(now or datetime.now(UTC))
    try:  # moments near datetime.min / max overflow in the arithmetic below
        end_ = _utc(end) if end is not None else now
        start_ = _utc(start) if start is not None else end_ - timedelta(days=7)
        if end_ <= start_:
            raise RangeError("end must be after start")
        start_ = _floor(start_, "hour")
        aligned_end = _floor(end_, "hour")
        end_ = aligned_end if aligned_end == end_ else aligned_end + _HOUR  # the hour holding `end` is included
    except OverflowError:
        raise RangeError("start and end must lie between the years 1 and 9999") from None
    if end_ - start_ > MAX_RANGE:
        raise RangeError(f"the range may span at most {MAX_RANGE.days} days")
    if bucket == "hour" and end_ - start_ > MAX_HOUR_BUCKETS * _HOUR:
        raise RangeError(f"hour buckets cover at most {MAX_HOUR_BUCKETS // 24} days; use bucket=day")
    return start_, end_


def _sums(row: Any, offset: int) -> Sums:
    return Sums(*(int(v or 0) for v in row[offset:offset + len(_COUNTERS)]))


class UsageService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, grouping_sets: bool = True) -> None:
        self._sessions = sessions
        self._grouping_sets = grouping_sets  # off: the portable two queries on PostgreSQL too (benchmark arm)

    async def report(self, q: UsageQuery) -> UsageReport:
        by_hour = self._summed(UsageHourly, UsageHourly.hour, q).group_by(UsageHourly.hour)
        table: type[UsageHourly] | type[UsageHourlyEndUser] = UsageHourlyEndUser if q.group_by == "end_user" \
            else UsageHourly
        column = {"key": table.key_id, "model": table.model, "end_user": UsageHourlyEndUser.end_user}[q.group_by]
        by_group = (self._summed(table, column, q).group_by(column)
                    .order_by(func.sum(table.billed_ticks).desc(), func.sum(table.requests).desc(), column)
                    .limit(MAX_GROUPS))
        async with self._sessions() as s:
            if self._grouping_sets and q.group_by != "end_user" and s.get_bind().dialect.name == "postgresql":
                hours, group_rows = await self._one_scan(s, q, column)
            else:
                hours = (await s.execute(by_hour)).all()
                group_rows = (await s.execute(by_group)).all()
            names = await self._key_names(s, [r[0] for r in group_rows]) if q.group_by == "key" else {}
        report = UsageReport(q, self._buckets(q, hours), [])
        for _, bucket_sums in report.buckets:
            report.totals.add(bucket_sums)
        for row in group_rows:
            group = str(row[0])
            name = names.get(group, group) if q.group_by == "key" else group or "(none)"
            report.groups.append((group, name, _sums(row, 1)))
        return report

    async def _one_scan(self, s: AsyncSession, q: UsageQuery, column: Any) -> tuple[list[Any], list[Any]]:
        """PostgreSQL: the hours and the groups of ``usage_hourly`` in one scan (GROUPING SETS)."""
        query = (select(UsageHourly.hour, column, *(func.sum(getattr(UsageHourly, c)) for c in _COUNTERS),
                        func.grouping(UsageHourly.hour))
                 .where(UsageHourly.hour >= q.start, UsageHourly.hour < q.end)
                 .group_by(func.grouping_sets(UsageHourly.hour, column)))
        if q.org_id is not None:
            query = query.where(UsageHourly.org_id == q.org_id)
        hours: list[Any] = []
        groups: list[Any] = []
        billed = 1 + _COUNTERS.index("billed_ticks")
        for row in (await s.execute(query)).all():
            if row[-1] == 0:  # grouped by hour
                hours.append((row[0], *row[2:-1]))
            else:
                groups.append(tuple(row[1:-1]))
        groups.sort(key=lambda g: (-int(g[billed]), -int(g[1]), str(g[0])))
        return hours, groups[:MAX_GROUPS]

    @staticmethod
    def _summed(table: type[UsageHourly] | type[UsageHourlyEndUser], first: Any, q: UsageQuery) -> Select[Any]:
        query = select(first, *(func.sum(getattr(table, c)) for c in _COUNTERS)) \
            .where(table.hour >= q.start, table.hour < q.end)
        return query.where(table.org_id == q.org_id) if q.org_id is not None else query

    @staticmethod
    def _buckets(q: UsageQuery, hours: Sequence[Any]) -> list[tuple[datetime, Sums]]:
        """Every bucket of the range in order, empty ones included (charts need the gaps)."""
        step = timedelta(days=1) if q.bucket == "day" else _HOUR
        buckets: dict[datetime, Sums] = {}
        moment = _floor(q.start, q.bucket)
        while moment < q.end:
            buckets[moment] = Sums()
            moment += step
        for row in hours:
            bucket = buckets.get(_floor(aware(row[0]), q.bucket))
            if bucket is not None:
                bucket.add(_sums(row, 1))
        return list(buckets.items())

    @staticmethod
    async def _key_names(session: AsyncSession, key_ids: list[str]) -> dict[str, str]:
        if not key_ids:
            return {}
        rows = await session.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(key_ids)))
        return {key_id: name for key_id, name in rows.all()}
