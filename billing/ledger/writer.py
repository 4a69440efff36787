"""Usage records into SQL in batches, exactly once.

``LedgerWriter.write`` inserts a batch with ``ON CONFLICT (request_id) DO NOTHING`` and adds only the
rows actually inserted to the hourly rollups, in one transaction. Writing the same record twice (a
replay, a retry, a writer that died after committing but before acknowledging) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.usage import UsageRecord

_SUMMED = ("prompt_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "list_ticks", "billed_ticks")

# PostgreSQL: one statement inserts the batch from arrays (unnest) and rolls up exactly the rows it
# inserted; one round trip, atomic on its own.
_COLUMNS = [("request_id", "text"), ("org_id", "text"), ("key_id", "text"), ("end_user", "text"), ("model", "text"),
            ("requested_model", "text"), ("worker", "text"), ("prompt_tokens", "bigint"), ("cached_tokens", "bigint"),
            ("output_tokens", "bigint"), ("reasoning_tokens", "bigint"), ("list_ticks", "bigint"),
            ("billed_ticks", "bigint"), ("plan", "text"), ("started_at", "timestamptz"), ("ttfb_ms", "int"),
            ("duration_ms", "int"), ("status", "text"), ("http_status", "int"), ("reported", "bool"),
            ("stream", "bool")]
_PG_WRITE = f"""
WITH ins AS (
  INSERT INTO usage_ledger ({", ".join(c for c, _ in _COLUMNS)})
  SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_COLUMNS, start=1))})
  ON CONFLICT (request_id) DO NOTHING
  RETURNING started_at, org_id, key_id, model, reported, {", ".join(_SUMMED)}
), rolled AS (
  INSERT INTO usage_hourly (hour, org_id, key_id, model, requests, {", ".join(_SUMMED)}, counted_requests)
  SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', org_id, key_id, model, count(*),
         {", ".join(f"sum({c})" for c in _SUMMED)}, count(*) FILTER (WHERE NOT reported)
  FROM ins GROUP BY 1, 2, 3, 4
  ON CONFLICT (hour, org_id, key_id, model) DO UPDATE SET
    requests = usage_hourly.requests + EXCLUDED.requests,
    {", ".join(f"{c} = usage_hourly.{c} + EXCLUDED.{c}" for c in _SUMMED)},
    counted_requests = usage_hourly.counted_requests + EXCLUDED.counted_requests
)
SELECT count(*) FROM ins
"""
# SQLite: multi-row INSERT ... RETURNING (at most _SQLITE_ROWS rows a statement, under the variable
# limit), then the rollups of the returned rows in one executemany, in one IMMEDIATE transaction.
_SQLITE_ROWS = 1000
_SQLITE_INSERT = (f"INSERT INTO usage_ledger ({', '.join(c for c, _ in _COLUMNS)}) VALUES "
                  "{rows} ON CONFLICT (request_id) DO NOTHING RETURNING request_id")
_SQLITE_ROW = "(" + ",".join("?" * len(_COLUMNS)) + ")"
_SQLITE_ROLLUP = (
    f"INSERT INTO usage_hourly (hour, org_id, key_id, model, requests, {', '.join(_SUMMED)}, counted_requests) "
    f"VALUES ({','.join('?' * (6 + len(_SUMMED)))}) ON CONFLICT (hour, org_id, key_id, model) DO UPDATE SET "
    f"requests = requests + excluded.requests, {', '.join(f'{c} = {c} + excluded.{c}' for c in _SUMMED)}, "
    "counted_requests = counted_requests + excluded.counted_requests")


def _sqlite_time(moment: datetime) -> str:
    """The text SQLAlchemy stores for a DateTime on SQLite (naive UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _values(r: UsageRecord, started: Any) -> tuple[Any, ...]:
    return (r.request_id, r.org_id, r.key_id, r.end_user, r.model, r.requested_model, r.worker, r.prompt_tokens,
            r.cached_tokens, r.output_tokens, r.reasoning_tokens, r.list_ticks, r.billed_ticks, r.plan, started,
            r.ttfb_ms, r.duration_ms, r.status, r.http_status, r.reported, r.stream)


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _hour(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 3_600_000 * 3600, UTC)


@dataclass
class _Sums:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    list_ticks: int = 0
    billed_ticks: int = 0
    counted_requests: int = 0


def rollup(records: Iterable[UsageRecord]) -> list[dict[str, Any]]:
    """Hourly sums per (hour, org, key, model) of ``records``."""
    groups: dict[tuple[datetime, str, str, str], _Sums] = {}
    for r in records:
        group = (_hour(r.started_at_ms), r.org_id, r.key_id, r.model)
        sums = groups.get(group)
        if sums is None:
            sums = groups[group] = _Sums()
        sums.requests += 1
        sums.prompt_tokens += r.prompt_tokens
        sums.cached_tokens += r.cached_tokens
        sums.output_tokens += r.output_tokens
        sums.reasoning_tokens += r.reasoning_tokens
        sums.list_ticks += r.list_ticks
        sums.billed_ticks += r.billed_ticks
        sums.counted_requests += 0 if r.reported else 1
    return [{"hour": hour, "org_id": org, "key_id": key, "model": model, **vars(sums)}
            for (hour, org, key, model), sums in groups.items()]


class LedgerWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise ValueError(f"the ledger supports PostgreSQL and SQLite, not {engine.dialect.name}")
        self._engine = engine

    async def write(self, records: Sequence[UsageRecord]) -> int:
        """Insert the records not yet in the ledger and roll them up; returns how many were new."""
        if not records:
            return 0
        unique = list({r.request_id: r for r in records}.values())
        if self._engine.dialect.name == "postgresql":
            return await self._write_pg(unique)
        return await self._write_sqlite(unique)

    async def _write_sqlite(self, records: list[UsageRecord]) -> int:
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection  # aiosqlite
            await driver.execute("BEGIN IMMEDIATE")
            try:
                inserted: set[str] = set()
                for start in range(0, len(records), _SQLITE_ROWS):
                    chunk = records[start:start + _SQLITE_ROWS]
                    params = [v for r in chunk for v in _values(r, _sqlite_time(_moment(r.started_at_ms)))]
                    cursor = await driver.execute(_SQLITE_INSERT.format(rows=",".join([_SQLITE_ROW] * len(chunk))),
                                                  params)
                    inserted.update(row[0] for row in await cursor.fetchall())
                    await cursor.close()
                new = [r for r in records if r.request_id in inserted]
                sums = [(_sqlite_time(g["hour"]), g["org_id"], g["key_id"], g["model"], g["requests"],
                         *(g[c] for c in _SUMMED), g["counted_requests"]) for g in rollup(new)]
                if sums:
                    await driver.executemany(_SQLITE_ROLLUP, sums)
                await driver.commit()
            except BaseException:
                await driver.rollback()
                raise
        return len(new)

    async def _write_pg(self, records: list[UsageRecord]) -> int:
        columns: list[list[Any]] = [[] for _ in _COLUMNS]
        for r in records:
            for column, value in zip(columns, _values(r, _moment(r.started_at_ms)), strict=True):
                column.append(value)
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            inserted = await driver.fetchval(_PG_WRITE, *columns)
        return int(inserted)
