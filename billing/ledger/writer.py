"""Usage records into SQL in batches, exactly once.

``LedgerWriter.write`` inserts a batch with ``ON CONFLICT ... DO NOTHING`` on the ledger's unique key and adds
only the rows actually inserted to the hourly rollups (``usage_hourly`` and, per end user,
``usage_hourly_end_users``), in one transaction. Writing the same record twice (a
replay, a retry, a writer that died after committing but before acknowledging) changes nothing.

The unique key is ``request_id`` on SQLite and ``(request_id, started_at)`` on PostgreSQL, where the ledger
is partitioned by month of ``started_at`` (a partitioned table's unique key must hold the partition key;
billing/ledger/partitions.py). Every copy of one record carries the ``started_at`` its replica stamped, so
the copies share one key (and one partition) and the conflict drops them; request ids are 96 random bits,
never reused by another request.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.usage_record import UsageRecord

_SUMMED = ("prompt_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "list_ticks", "billed_ticks")
# Every counter of usage_hourly, in the order the statements below write them.
_COUNTERS = ("requests", *_SUMMED, "counted_requests", "errors", "rate_limited", "decode_ms", "decode_tokens")
_GROUP = ("hour", "org_id", "key_id", "model")
_USER_GROUP = (*_GROUP, "end_user")

# PostgreSQL: one statement inserts the batch from arrays (unnest) and rolls up exactly the rows it
# inserted, together with the refused requests of the batch (pre-summed, never inserted into the
# ledger), into both rollup tables; one round trip, atomic on its own.
_COLUMNS = [("request_id", "text"), ("org_id", "text"), ("key_id", "text"), ("end_user", "text"), ("model", "text"),
            ("requested_model", "text"), ("worker", "text"), ("prompt_tokens", "bigint"), ("cached_tokens", "bigint"),
            ("output_tokens", "bigint"), ("reasoning_tokens", "bigint"), ("list_ticks", "bigint"),
            ("billed_ticks", "bigint"), ("plan", "text"), ("started_at", "timestamptz"), ("ttfb_ms", "int"),
            ("duration_ms", "int"), ("status", "text"), ("http_status", "int"), ("reported", "bool"),
            ("stream", "bool"), ("app", "text"), ("provider_cost_ticks", "bigint")]
_REFUSED = [("timestamptz", "hour"), ("text", "org_id"), ("text", "key_id"), ("text", "model"), ("text", "end_user"),
            ("bigint", "rate_limited")]
# The same rule as UsageRecord.decode_ms.
_DECODE_MS = ("CASE WHEN status = 'ok' AND output_tokens > 0 THEN greatest(CASE WHEN stream THEN duration_ms - ttfb_ms "
              "ELSE duration_ms END, 0) ELSE 0 END")
_PG_WRITE = f"""
WITH ins AS (
  INSERT INTO usage_ledger ({", ".join(c for c, _ in _COLUMNS)})
  SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_COLUMNS, start=1))})
  ON CONFLICT (request_id, started_at) DO NOTHING
  RETURNING started_at, org_id, key_id, model, end_user, reported, status, stream, ttfb_ms, duration_ms,
            {", ".join(_SUMMED)}
), facts AS (
  SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, org_id, key_id, model,
         coalesce(end_user, '') AS end_user, 1 AS requests, {", ".join(_SUMMED)},
         CASE WHEN reported THEN 0 ELSE 1 END AS counted_requests, CASE WHEN status = 'ok' THEN 0 ELSE 1 END AS errors,
         0 AS rate_limited, {_DECODE_MS} AS decode_ms,
         CASE WHEN {_DECODE_MS} > 0 THEN output_tokens ELSE 0 END AS decode_tokens
  FROM ins
  UNION ALL
  SELECT hour, org_id, key_id, model, end_user, 0, {", ".join("0" for _ in _SUMMED)}, 0, 0, rate_limited, 0, 0
  FROM unnest({", ".join(f"${i}::{t}[]" for i, (t, _) in enumerate(_REFUSED, start=len(_COLUMNS) + 1))})
       AS refused({", ".join(n for _, n in _REFUSED)})
), rolled AS (
  INSERT INTO usage_hourly ({", ".join(_GROUP)}, {", ".join(_COUNTERS)})
  SELECT {", ".join(_GROUP)}, {", ".join(f"sum({c})" for c in _COUNTERS)}
  FROM facts GROUP BY 1, 2, 3, 4
  ON CONFLICT ({", ".join(_GROUP)}) DO UPDATE SET
    {", ".join(f"{c} = usage_hourly.{c} + EXCLUDED.{c}" for c in _COUNTERS)}
), rolled_end_users AS (
  INSERT INTO usage_hourly_end_users ({", ".join(_USER_GROUP)}, {", ".join(_COUNTERS)})
  SELECT {", ".join(_USER_GROUP)}, {", ".join(f"sum({c})" for c in _COUNTERS)}
  FROM facts GROUP BY 1, 2, 3, 4, 5
  ON CONFLICT ({", ".join(_USER_GROUP)}) DO UPDATE SET
    {", ".join(f"{c} = usage_hourly_end_users.{c} + EXCLUDED.{c}" for c in _COUNTERS)}
)
SELECT count(*) FROM ins
"""
# SQLite: multi-row INSERT ... RETURNING (at most _SQLITE_ROWS rows a statement, under the variable
# limit), then the rollups of the returned rows and of the refused requests in one executemany, in
# one IMMEDIATE transaction.
_SQLITE_ROWS = 1000
_SQLITE_INSERT = (f"INSERT INTO usage_ledger ({', '.join(c for c, _ in _COLUMNS)}) VALUES "
                  "{rows} ON CONFLICT (request_id) DO NOTHING RETURNING request_id")
_SQLITE_ROW = "(" + ",".join("?" * len(_COLUMNS)) + ")"
_HOUR_MS = 3_600_000
_YEAR_10000_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z


# Positional arguments of _PG_WRITE, by name (to say which column of a batch a failure is about).
_ARGUMENTS = [*(c for c, _ in _COLUMNS), *(f"refused.{n}" for _, n in _REFUSED)]


class LedgerWriteError(SQLAlchemyError):
    """A batch the raw driver failed, re-raised without the batch's values: asyncpg quotes the whole offending
    column (the end users, request ids of every record) and PostgreSQL the offending value in their messages.
    A SQLAlchemyError, so that whatever handles a failed SQL write handles this one too; ``driver_class``
    names the driver's error, so that the writers can tell a lost connection from a bad record."""

    driver_class: type[BaseException] | None = None


def _without_values(exc: Exception) -> LedgerWriteError:
    error = _value_free(exc)
    error.driver_class = type(exc)
    return error


def _value_free(exc: Exception) -> LedgerWriteError:
    if isinstance(exc, asyncpg.DataError):  # bad input: the message quotes it, keep the column only
        found = re.search(r"query argument \$(\d+)", str(exc))
        n = int(found.group(1)) if found else 0
        column = _ARGUMENTS[n - 1] if 0 < n <= len(_ARGUMENTS) else "unknown"
        return LedgerWriteError(f"{type(exc).__name__} (SQLSTATE {exc.sqlstate}) in ledger column {column}; "
                                "values omitted")
    if isinstance(exc, asyncpg.PostgresError):  # its message without the DETAIL, which quotes the failing row
        return LedgerWriteError(f"{type(exc).__name__} (SQLSTATE {exc.sqlstate}): {exc.args[0] if exc.args else ''}")
    return LedgerWriteError(f"{type(exc).__name__}: {exc}")  # client-side and SQLite errors quote no rows


def _sqlite_upsert(table: str, group: tuple[str, ...]) -> str:
    return (f"INSERT INTO {table} ({', '.join(group)}, {', '.join(_COUNTERS)}) "
            f"VALUES ({','.join('?' * (len(group) + len(_COUNTERS)))}) ON CONFLICT ({', '.join(group)}) DO UPDATE SET "
            f"{', '.join(f'{c} = {c} + excluded.{c}' for c in _COUNTERS)}")


_SQLITE_ROLLUPS = ((_sqlite_upsert("usage_hourly", _GROUP), False),
                   (_sqlite_upsert("usage_hourly_end_users", _USER_GROUP), True))


def _sqlite_time(moment: datetime) -> str:
    """The text SQLAlchemy stores for a DateTime on SQLite (naive UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_stamps(records: Sequence[UsageRecord]) -> list[str]:
    """``_sqlite_time`` of each record's start, without building a datetime per record: the text of each
    second once (a batch's records share a few), then its milliseconds."""
    seconds_text: dict[int, str] = {}
    out = []
    for r in records:
        ms = r.started_at_ms
        if not 0 <= ms < _YEAR_10000_MS:  # what time.gmtime may not format as datetime does: the general way
            out.append(_sqlite_time(_moment(ms)))
            continue
        seconds, milli = divmod(ms, 1000)
        text = seconds_text.get(seconds)
        if text is None:
            text = seconds_text[seconds] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
        out.append(f"{text}.{milli:03d}000")
    return out


def _values(r: UsageRecord, started: Any) -> tuple[Any, ...]:
    return (r.request_id, r.org_id, r.key_id, r.end_user, r.model, r.requested_model, r.worker, r.prompt_tokens,
            r.cached_tokens, r.output_tokens, r.reasoning_tokens, r.list_ticks, r.billed_ticks, r.plan, started,
            r.ttfb_ms, r.duration_ms, r.status, r.http_status, r.reported, r.stream, r.app, r.provider_cost_ticks)


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _hour(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // _HOUR_MS * 3600, UTC)


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
    errors: int = 0
    rate_limited: int = 0
    decode_ms: int = 0
    decode_tokens: int = 0


def rollup(records: Iterable[UsageRecord], by_end_user: bool = False) -> list[dict[str, Any]]:
    """Hourly sums per (hour, org, key, model), and end user with ``by_end_user``, of ``records`` (ledger
    rows and refused requests); ``end_user`` is ``""`` when none was given or not grouped by it."""
    groups: dict[tuple[int, str, str, str, str], _Sums] = {}  # keyed by the hour's number, not its datetime
    for r in records:
        group = (r.started_at_ms // _HOUR_MS, r.org_id, r.key_id, r.model, (r.end_user or "") if by_end_user else "")
        sums = groups.get(group)
        if sums is None:
            sums = groups[group] = _Sums()
        if r.refused:
            sums.rate_limited += 1
            continue
        sums.requests += 1
        sums.prompt_tokens += r.prompt_tokens
        sums.cached_tokens += r.cached_tokens
        sums.output_tokens += r.output_tokens
        sums.reasoning_tokens += r.reasoning_tokens
        sums.list_ticks += r.list_ticks
        sums.billed_ticks += r.billed_ticks
        sums.counted_requests += 0 if r.reported else 1
        sums.errors += 0 if r.status == "ok" else 1
        decode_ms = r.decode_ms
        if decode_ms > 0:
            sums.decode_ms += decode_ms
            sums.decode_tokens += r.output_tokens
    return [{"hour": _hour(hour * _HOUR_MS), "org_id": org, "key_id": key, "model": model, "end_user": end_user,
             **vars(sums)} for (hour, org, key, model, end_user), sums in groups.items()]


class LedgerWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise ValueError(f"the ledger supports PostgreSQL and SQLite, not {engine.dialect.name}")
        self._engine = engine

    async def write(self, records: Sequence[UsageRecord]) -> int:
        """Insert the records not yet in the ledger and roll them up; returns how many were new.

        Refused records are only counted in the rollups (at least once: a batch replayed after a
        crash between commit and acknowledgement counts its refusals twice; they carry no money)."""
        if not records:
            return 0
        unique = list({r.request_id: r for r in records}.values())
        billed = [r for r in unique if not r.refused]
        refused = [r for r in unique if r.refused]
        if self._engine.dialect.name == "postgresql":
            return await self._write_pg(billed, refused)
        return await self._write_sqlite(billed, refused)

    async def _write_sqlite(self, records: list[UsageRecord], refused: list[UsageRecord]) -> int:
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection  # aiosqlite
            await driver.execute("BEGIN IMMEDIATE")
            try:
                inserted: set[str] = set()
                for start in range(0, len(records), _SQLITE_ROWS):
                    chunk = records[start:start + _SQLITE_ROWS]
                    params = [v for r, stamp in zip(chunk, _sqlite_stamps(chunk), strict=True)
                              for v in _values(r, stamp)]
                    cursor = await driver.execute(_SQLITE_INSERT.format(rows=",".join([_SQLITE_ROW] * len(chunk))),
                                                  params)
                    inserted.update(row[0] for row in await cursor.fetchall())
                    await cursor.close()
                new = [r for r in records if r.request_id in inserted]
                for statement, by_end_user in _SQLITE_ROLLUPS:
                    group = _USER_GROUP if by_end_user else _GROUP
                    sums = [(_sqlite_time(g["hour"]), *(g[c] for c in group[1:]), *(g[c] for c in _COUNTERS))
                            for g in rollup([*new, *refused], by_end_user)]
                    if sums:
                        await driver.executemany(statement, sums)
                await driver.commit()
            except sqlite3.Error as exc:  # the raw driver's (locked, full, unreadable): handled as any failed write
                await driver.rollback()
                raise _without_values(exc) from exc
            except BaseException:
                await driver.rollback()
                raise
        return len(new)

    async def _write_pg(self, records: list[UsageRecord], refused: list[UsageRecord]) -> int:
        columns: list[list[Any]] = [[] for _ in _COLUMNS]
        for r in records:
            for column, value in zip(columns, _values(r, _moment(r.started_at_ms)), strict=True):
                column.append(value)
        refused_sums = rollup(refused, by_end_user=True)
        columns += [[g[name] for g in refused_sums] for _, name in _REFUSED]
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            try:
                inserted = await driver.fetchval(_PG_WRITE, *columns)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                await conn.invalidate()  # a connection cut mid-statement may be left in a broken state
                raise _without_values(exc) from None
        return int(inserted)
