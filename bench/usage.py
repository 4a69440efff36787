"""Usage API query latency over a month of hourly rollups in PostgreSQL.

    python -m bench.usage [--days 30] [--keys 20] [--models 3] [--users 50] [--active 20] [--other-orgs 50]
                          [--repeat 15]

Fills ``usage_hourly_end_users`` and ``usage_hourly`` in a fresh temporary database (removed
afterwards) with one organisation's month: every hour x key x model, each with the end users active
in that hour (``--active`` percent of ``--users``, chosen by a hash, so about users x active / 100 rows
per hour, key and model), plus ``--other-orgs`` smaller organisations (2 keys, 1 model, 2 end users)
so that the index has to select. Then times ``UsageService.report`` (what ``/v1/usage`` and ``/admin/usage`` run: two
grouped range queries and the key-name lookup) for day and hour buckets grouped by key, end user and
model, and prints the median and the slowest of ``--repeat`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from gateway.config import Settings
from gateway.db import engine as db
from gateway.services.keys import KeyService
from gateway.services.usage import Bucket, GroupBy, UsageQuery, UsageService

PG_ADMIN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

# One organisation's month per end user, then the same summed over end users into usage_hourly (what the
# ledger writer does batch by batch).
_FILL = """
INSERT INTO usage_hourly_end_users (hour, org_id, key_id, model, end_user, requests, prompt_tokens, cached_tokens,
                                    output_tokens, reasoning_tokens, list_ticks, billed_ticks, counted_requests,
                                    errors, rate_limited, decode_ms, decode_tokens)
SELECT h, $1, k, m, u, r, r * 3000, r * 2000, r * 300, r * 20, r * 6900000, r * 6900000, 0, r / 15, r / 10,
       r * 4000, r * 300
FROM (SELECT h, k, 'model-' || m AS m, CASE WHEN u = 0 THEN '' ELSE 'user-' || u END AS u,
             1 + abs(hashtext(h::text || k || m || u)) % 20 AS r, abs(hashtext(u || k || h::text)) % 100 AS pick
      FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 hour', interval '1 hour') AS h,
           unnest($4::text[]) AS k, generate_series(1, $5::int) AS m, generate_series(0, $6::int) AS u) AS facts
WHERE pick < $7
"""
_COUNTERS = ("requests, prompt_tokens, cached_tokens, output_tokens, reasoning_tokens, list_ticks, billed_ticks, "
             "counted_requests, errors, rate_limited, decode_ms, decode_tokens")
_NARROW = f"""
INSERT INTO usage_hourly (hour, org_id, key_id, model, {_COUNTERS})
SELECT hour, org_id, key_id, model, {", ".join(f"sum({c})" for c in _COUNTERS.split(", "))}
FROM usage_hourly_end_users GROUP BY 1, 2, 3, 4
"""


async def _fill(url: str, args: argparse.Namespace, start: datetime, end: datetime) -> tuple[str, int]:
    engine = db.make_engine(url)
    keys = KeyService(db.sessionmaker(engine))
    org = await keys.create_org("bench-usage")
    key_ids = [(await keys.create_key(org.id, f"key-{i}")).view.id for i in range(args.keys)]
    await engine.dispose()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        began = time.perf_counter()
        await conn.execute(_FILL, org.id, start, end, key_ids, args.models, args.users, args.active)
        for n in range(args.other_orgs):
            await conn.execute(_FILL, f"org_other_{n}", start, end, [f"key_other_{n}_a", f"key_other_{n}_b"], 1, 2,
                               100)
        await conn.execute(_NARROW)
        await conn.execute("ANALYZE usage_hourly")
        await conn.execute("ANALYZE usage_hourly_end_users")
        counts = []
        for table in ("usage_hourly", "usage_hourly_end_users"):
            rows = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE org_id = $1", org.id)
            total = await conn.fetchval(f"SELECT count(*) FROM {table}")
            counts.append(f"{table}: {total:,} rows, {rows:,} of the measured organisation")
        print(f"filled in {time.perf_counter() - began:.1f} s; " + "; ".join(counts))
    finally:
        await conn.close()
    return org.id, int(rows)


async def _time(service: UsageService, query: UsageQuery, repeat: int) -> tuple[float, float, int, int]:
    report = await service.report(query)  # warm-up
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        report = await service.report(query)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), max(times), len(report.buckets), len(report.groups)


async def main(args: argparse.Namespace) -> None:
    name = "gw_bench_usage_" + secrets.token_hex(4)
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = Settings(database_url=PG_ADMIN.rsplit("/", 1)[0] + "/" + name).sqlalchemy_url
    try:
        await db.upgrade(url)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = end - timedelta(days=args.days)
        org, _ = await _fill(url, args, start, end)
        engine = db.make_engine(url)
        service = UsageService(db.sessionmaker(engine))
        portable = UsageService(db.sessionmaker(engine), grouping_sets=False)
        print(f"UsageService.report (median / slowest of {args.repeat}, ms); keys and models also with two "
              "queries instead of one GROUPING SETS scan, side by side:")
        cases: list[tuple[str | None, Bucket, GroupBy, datetime]] = [
            (org, "day", "key", start), (org, "day", "end_user", start), (org, "day", "model", start),
            (org, "hour", "key", start), (org, "hour", "end_user", start),
            (org, "hour", "key", end - timedelta(days=1)), (org, "day", "key", end - timedelta(days=7)),
            (None, "day", "key", start)]
        for org_id, bucket, group_by, since in cases:
            query = UsageQuery(since, end, bucket, group_by, org_id)
            median, slowest, buckets, groups = await _time(service, query, args.repeat)
            span = f"{(end - since).days:>2} d"
            who = "one org " if org_id else "all orgs"
            line = (f"  {who} {span} bucket={bucket:<4} group_by={group_by:<8}  {median:7.1f} / {slowest:7.1f}"
                    f"   ({buckets} buckets, {groups} groups)")
            if group_by != "end_user":
                median, slowest, _, _ = await _time(portable, query, args.repeat)
                line += f"   two queries: {median:7.1f} / {slowest:7.1f}"
            print(line)
        await engine.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--active", type=int, default=20, help="percent of end users active in an hour per key")
    parser.add_argument("--other-orgs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15)
    asyncio.run(main(parser.parse_args()))
