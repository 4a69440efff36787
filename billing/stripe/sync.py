"""Ledger rows to Stripe meter events, exactly once, within Stripe's limits.

``prepare`` claims every ledger row not yet handed to Stripe (of organisations mapped to a Stripe
customer, older than ``settle_delay_s``) into a new batch and stores one meter event per (customer,
meter, window) with a deterministic identifier, in the same transaction. ``send`` then delivers the
stored, unsent events one at a time (so never two concurrent calls per customer and meter), paced
under the rate limit; a duplicate-identifier 400 means Stripe already has it; 429 and 5xx back off and
retry; an event still failing stays unsent for the next run and is resent unchanged. Running the
sync twice sends nothing new.

Tokens of requests billed 0 (a free plan) are metered in the ledger but not sent: Stripe prices what
it receives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Integer, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from billing.ledger.billing_queries import aware, customers, utcnow
from billing.ledger.ledger_tables import MeterEventRow, UsageRow

if TYPE_CHECKING:  # the SDK is imported where it is used: it is a tenth of the gateway's start-up imports
    import stripe

log = logging.getLogger("billing.stripe")

METERS = ("input", "cached", "output")
MAX_PAST = timedelta(days=35) - timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class MeterNames:
    input: str = "gateway_input_tokens"
    cached: str = "gateway_cached_input_tokens"
    output: str = "gateway_output_tokens"

    def of(self, meter: str) -> str:
        return str(getattr(self, meter))


@dataclass
class SyncReport:
    rows_claimed: int = 0
    events_created: int = 0
    sent: int = 0
    duplicates: int = 0
    retried: int = 0
    failed: int = 0
    pending: int = 0


@dataclass
class StripeConnection:
    """The official SDK's client on an aiohttp transport; close it when done."""

    client: stripe.StripeClient
    http: stripe.AIOHTTPClient

    async def aclose(self) -> None:
        await self.http.close_async()  # type: ignore[no-untyped-call]


def connect(api_key: str, base_url: str = "") -> StripeConnection:
    """``base_url`` points the SDK at another server (the local test server) through ``base_addresses``.
    The SDK's own retries are off: the sync backs off and retries itself, 429 included."""
    import stripe  # only a gateway that syncs to Stripe pays for this import (see above)

    http = stripe.AIOHTTPClient()
    if base_url:
        base = base_url.rstrip("/")
        client = stripe.StripeClient(api_key, base_addresses={"api": base, "meter_events": base},
                                     max_network_retries=0, http_client=http)
    else:
        client = stripe.StripeClient(api_key, max_network_retries=0, http_client=http)
    return StripeConnection(client, http)


def window_expr(dialect: str, column: Any, window_s: int) -> ColumnElement[Any]:
    """The start (Unix seconds) of the window a timestamp falls in, in SQL."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column) / window_s), BigInteger) * window_s
    return cast(func.strftime("%s", column), Integer) // window_s * window_s


class Pacer:
    """At most ``per_s`` calls per second, one after another."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / per_s if per_s > 0 else 0.0
        self._next = 0.0
        self._clock = clock

    async def wait(self) -> None:
        now = self._clock()
        if self._next > now:
            await asyncio.sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


def is_duplicate(exc: stripe.InvalidRequestError) -> bool:
    message = str(getattr(exc, "user_message", "") or exc)
    return exc.code == "duplicate_meter_event" or "already exists with identifier" in message


class MeterSync:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], client: stripe.StripeClient,
                 names: MeterNames | None = None, *, window_s: int = 3600, settle_delay_s: float = 60.0,
                 max_calls_per_s: float = 20.0, max_attempts: int = 5, backoff_s: float = 0.5,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessions
        self._client = client
        self._names = names or MeterNames()
        self._window_s = window_s
        self._settle_delay = timedelta(seconds=settle_delay_s)
        self._pacer = Pacer(max_calls_per_s)
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._clock = clock

    async def run(self) -> SyncReport:
        report = SyncReport()
        await self.prepare(report)
        await self.send(report)
        return report

    async def prepare(self, report: SyncReport | None = None) -> int:
        """Claim unreported rows into a batch and store its meter events; returns events created."""
        report = report or SyncReport()
        async with self._sessions() as s, s.begin():
            mapping = await customers(s)
            if not mapping:
                return 0
            batch = time.time_ns() // 1000
            cutoff = self._clock() - self._settle_delay
            claimed = await s.execute(
                update(UsageRow).where(UsageRow.stripe_batch.is_(None), UsageRow.org_id.in_(list(mapping)),
                                       UsageRow.started_at < cutoff)
                .values(stripe_batch=batch).execution_options(synchronize_session=False))
            report.rows_claimed += claimed.rowcount  # type: ignore[attr-defined]
            window = window_expr(s.get_bind().dialect.name, UsageRow.started_at, self._window_s).label("window")
            sums = await s.execute(
                select(UsageRow.org_id, window, func.sum(UsageRow.prompt_tokens - UsageRow.cached_tokens),
                       func.sum(UsageRow.cached_tokens), func.sum(UsageRow.output_tokens))
                .where(UsageRow.stripe_batch == batch, UsageRow.billed_ticks > 0)
                .group_by(UsageRow.org_id, window))
            now = self._clock()
            created = 0
            for org_id, window_start, uncached, cached, output in sums.all():
                start = datetime.fromtimestamp(int(window_start), UTC)
                for meter, value in zip(METERS, (uncached, cached, output), strict=True):
                    if not value:
                        continue
                    s.add(MeterEventRow(
                        identifier=f"gw-{batch}-{org_id}-{meter}-{int(window_start)}"[:100], batch=batch,
                        org_id=org_id, customer_id=mapping[org_id], meter=meter, event_name=self._names.of(meter),
                        window_start=start, value=int(value), created_at=now, attempts=0))
                    created += 1
        report.events_created += created
        return created

    async def send(self, report: SyncReport | None = None) -> SyncReport:
        """Deliver every stored, unsent event (oldest batch first)."""
        report = report or SyncReport()
        async with self._sessions() as s:
            pending = list((await s.execute(select(MeterEventRow).where(MeterEventRow.sent_at.is_(None))
                                            .order_by(MeterEventRow.batch, MeterEventRow.identifier))).scalars())
        for event in pending:
            delivered, error = await self._deliver(event, report)
            async with self._sessions() as s, s.begin():
                row = await s.get(MeterEventRow, event.identifier)
                assert row is not None
                row.attempts += 1
                if delivered:
                    row.sent_at = self._clock()
                    row.last_error = None
                else:
                    row.last_error = (error or "")[:300]
            if not delivered:
                report.failed += 1
        async with self._sessions() as s:
            report.pending = int((await s.execute(select(func.count()).select_from(MeterEventRow)
                                                  .where(MeterEventRow.sent_at.is_(None)))).scalar_one())
        return report

    async def _deliver(self, event: MeterEventRow, report: SyncReport) -> tuple[bool, str | None]:
        import stripe  # loaded by connect() already: a dictionary look-up

        now = self._clock()
        moment = max(aware(event.window_start), now - MAX_PAST)
        params: dict[str, Any] = {
            "event_name": event.event_name,
            "payload": {"stripe_customer_id": event.customer_id, "value": str(event.value)},
            "identifier": event.identifier,
            "timestamp": int(min(moment, now).timestamp()),
        }
        error: str | None = None
        for attempt in range(self._max_attempts):
            await self._pacer.wait()
            try:
                await self._client.v1.billing.meter_events.create_async(
                    params, {"idempotency_key": event.identifier})  # type: ignore[arg-type]
                report.sent += 1
                return True, None
            except stripe.InvalidRequestError as exc:
                if is_duplicate(exc):
                    report.duplicates += 1
                    return True, None
                log.error("Stripe refused meter event %s: %s", event.identifier, exc)
                return False, f"refused: {exc}"
            except stripe.RateLimitError as exc:
                error = f"rate limited: {exc}"
            except (stripe.APIConnectionError, stripe.APIError) as exc:
                error = f"{exc.__class__.__name__}: {exc}"
            except stripe.StripeError as exc:  # authentication, permission: no point retrying
                log.error("Stripe call failed for %s: %s", event.identifier, exc)
                return False, f"{exc.__class__.__name__}: {exc}"
            report.retried += 1
            await asyncio.sleep(self._backoff_s * 2**attempt)
        log.warning("meter event %s not delivered after %d tries: %s", event.identifier, self._max_attempts, error)
        return False, error
