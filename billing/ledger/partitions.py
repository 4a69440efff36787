"""Monthly partitions of ``usage_ledger`` on PostgreSQL: created ahead, and dropped past the retention once
their rollups are in place. SQLite keeps one plain table, and every call here is a no-op there.

- ``ensure(now, months_ahead)`` creates the partitions of this month and the next ``months_ahead`` ones, and
  of any month that has rows waiting in ``usage_ledger_default`` (a row written while its month had no
  partition; such rows are moved into the new partition in the same transaction).
- ``prune(now, retention_months, ...)`` drops a month's partition once the whole month lies more than
  ``retention_months`` months before this one, and only when the hourly rollups of that month agree with its
  rows (requests, billed ticks): the usage API, the dashboard and the budgets read the rollups, so they are
  what stays. With the Stripe sync on, a month with a row not yet handed to Stripe is kept too.

Both take a transaction-level advisory lock, so any number of writers (replicas, ``gateway billing writer``,
the CLI) may call them at once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("billing.ledger")

PARENT = "usage_ledger"
DEFAULT = "usage_ledger_default"
_NAME = re.compile(r"^usage_ledger_(\d{4})_(\d{2})$")
_LOCK_KEY = 0x4C454447  # "LEDG": one advisory lock for every partition change

_LIST = text("""
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = :parent AND p.relnamespace = c.relnamespace AND c.relnamespace = current_schema()::regnamespace
""")
_IS_PARTITIONED = text("""
SELECT count(*) FROM pg_partitioned_table t JOIN pg_class c ON c.oid = t.partrelid
WHERE c.relname = :parent AND c.relnamespace = current_schema()::regnamespace
""")


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of ``moment``'s month."""
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return month.replace(year=index // 12, month=index % 12 + 1)


def partition_name(month: datetime) -> str:
    return f"{PARENT}_{month:%Y_%m}"


def month_of(name: str) -> datetime | None:
    found = _NAME.match(name)
    return datetime(int(found.group(1)), int(found.group(2)), 1, tzinfo=UTC) if found else None


@dataclass
class PruneReport:
    dropped: list[str] = field(default_factory=list)
    # (partition, why it stays)
    kept: list[tuple[str, str]] = field(default_factory=list)


class LedgerPartitions:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def supported(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    async def partitioned(self) -> bool:
        """Whether ``usage_ledger`` is a partitioned table here (PostgreSQL after migration 0006)."""
        if not self.supported:
            return False
        async with self._engine.connect() as conn:
            return bool((await conn.execute(_IS_PARTITIONED, {"parent": PARENT})).scalar_one())

    async def months(self) -> list[datetime]:
        """The months that have a partition, oldest first."""
        if not await self.partitioned():
            return []
        async with self._engine.connect() as conn:
            return await self._months(conn)

    async def ensure(self, now: datetime, months_ahead: int = 2) -> list[str]:
        """Create the missing partitions from this month to ``months_ahead`` months ahead, and those of the
        months with rows in the default partition; returns the names created."""
        if not await self.partitioned():
            return []
        created: list[str] = []
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            have = set(await self._months(conn))
            this = month_start(now)
            wanted = {add_months(this, n) for n in range(max(0, months_ahead) + 1)}
            waiting = await conn.execute(text(
                f"SELECT DISTINCT date_trunc('month', started_at AT TIME ZONE 'UTC') FROM {DEFAULT}"))
            wanted |= {m.replace(tzinfo=UTC) for (m,) in waiting}
            for month in sorted(wanted - have):
                await self._create(conn, month)
                created.append(partition_name(month))
        if created:
            log.info("ledger partitions created: %s", ", ".join(created))
        return created

    async def _months(self, conn: AsyncConnection) -> list[datetime]:
        names = (await conn.execute(_LIST, {"parent": PARENT})).scalars()
        return sorted(m for m in (month_of(n) for n in names) if m is not None)

    async def _create(self, conn: AsyncConnection, month: datetime) -> None:
        """The month's partition, built detached, filled with that month's rows from the default partition,
        then attached (PostgreSQL would refuse a new partition whose rows sit in the default one)."""
        name, start, end = partition_name(month), month.isoformat(), add_months(month, 1).isoformat()
        await conn.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
        await conn.execute(text(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE started_at >= :start AND started_at < :end RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved"), {"start": month, "end": add_months(month, 1)})
        await conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
                                f"FOR VALUES FROM ('{start}') TO ('{end}')"))

    async def prune(self, now: datetime, retention_months: int, require_synced: bool = False) -> PruneReport:
        """Drop the partitions of months wholly before ``retention_months`` months ago whose rollups agree
        with their rows (and, with ``require_synced``, whose rows were all handed to Stripe)."""
        report = PruneReport()
        if retention_months <= 0 or not await self.partitioned():
            return report
        horizon = add_months(month_start(now), -retention_months)
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            for month in await self._months(conn):
                if add_months(month, 1) > horizon:
                    continue
                name = partition_name(month)
                why = await self._reason_to_keep(conn, name, month, require_synced)
                if why:
                    report.kept.append((name, why))
                    continue
                await conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
                await conn.execute(text(f"DROP TABLE {name}"))
                report.dropped.append(name)
        if report.dropped:
            log.info("ledger partitions dropped (past %d months of retention): %s", retention_months,
                     ", ".join(report.dropped))
        for name, why in report.kept:
            log.warning("ledger partition %s is past the retention but kept: %s", name, why)
        return report

    @staticmethod
    async def _reason_to_keep(conn: AsyncConnection, name: str, month: datetime, require_synced: bool) -> str:
        rows, ticks, unsynced = (await conn.execute(text(
            f"SELECT count(*), coalesce(sum(billed_ticks), 0), count(*) FILTER (WHERE stripe_batch IS NULL) "
            f"FROM {name}"))).one()
        if rows == 0:
            return ""
        rolled, rolled_ticks = (await conn.execute(text(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(billed_ticks), 0) FROM usage_hourly "
            "WHERE hour >= :start AND hour < :end"), {"start": month, "end": add_months(month, 1)})).one()
        if (rolled, rolled_ticks) != (rows, ticks):
            return (f"its rollups do not match its rows ({rows} rows, {ticks} billed ticks; rollups {rolled} "
                    f"requests, {rolled_ticks} billed ticks)")
        if require_synced and unsynced:
            return f"{unsynced} rows not yet sent to Stripe"
        return ""
